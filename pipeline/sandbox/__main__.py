"""``python -m pipeline.sandbox``: run a sandbox in the foreground until Ctrl-C / SIGTERM.

Flags override ``--config-json``, which overrides the defaults.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from pipeline.sandbox.config import SandboxConfig, parse_rate
from pipeline.sandbox.server import DEFAULT_HOST, serve


def build_config(args: argparse.Namespace) -> SandboxConfig:
    """Merge ``--config-json`` and the explicit flags into one validated config."""
    fields: dict[str, Any] = {}
    if args.config_json:
        loaded = json.loads(args.config_json)
        if not isinstance(loaded, dict):
            raise ValueError("--config-json must be a JSON object")
        fields.update(loaded)
    if args.rate is not None:
        fields["rate_max"], fields["rate_interval_ms"] = parse_rate(args.rate)
    if args.latency_ms is not None:
        fields["latency_ms"] = args.latency_ms
    return SandboxConfig.from_dict(fields)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags and serve; exit status 2 on a bad config."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.sandbox", description="Run the HighLevel sandbox API server."
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="bind address (default loopback)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--rate", help="per-location burst limit, e.g. 100/10s (0 = unlimited)")
    parser.add_argument("--latency-ms", type=float, help="delay before each API answer")
    parser.add_argument(
        "--config-json",
        help='SandboxConfig fields as a JSON object, e.g. \'{"token_scopes": {"tok": '
        '["conversations.write"]}}\'',
    )
    args = parser.parse_args(argv)
    try:
        config = build_config(args)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        parser.error(str(exc))
    serve(config, args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
