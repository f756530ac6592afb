"""The configuration's options for the command line, without importing pydantic.

``RunConfig`` (``app/config.py``) is the one place an option is defined; the command line
needs only each option's flag, default, help and metavar, and importing pydantic to read
them was two thirds of ``pipeline --help``'s start-up (about 0.2 s of 0.35). So the table is
derived from the model (``option_specs``) into ``options.json`` beside this module, and the
command line reads that. tests/unit/app/test_config.py fails when the two differ;
``python -m pipeline.cli.options`` writes the file again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, get_args, get_origin

# (option, field, kind, help, metavar); kind: "flag" (a bool), "multiple" (a list, the
# option repeated) or "value". The defaults themselves stay the model's: the help says them.
Spec = tuple[str, str, str, str, str]

# The configuration's options, as ``option_specs`` derives them from ``RunConfig``: kept in
# a file so that ``--help`` does not import pydantic (two thirds of its start-up, about
# 0.2 s). tests/unit/app/test_config.py fails when the file and the model differ;
# ``python -m pipeline.cli.group`` writes it again.
OPTIONS_FILE = Path(__file__).with_name("options.json")


def option_specs() -> list[Spec]:
    """(option, field, kind, help, metavar) for every configuration field, derived from
    ``RunConfig`` (what ``options.json`` holds)."""
    from pipeline.app.config import ENV_PREFIX, RunConfig

    specs = []
    for name, field in RunConfig.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "" if default in (None, False, []) else f" [default: {default}]"
        env = f" [env: {ENV_PREFIX}{name.upper()}]"
        choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
        if choices:
            metavar = "[" + "|".join(choices) + "]"
        elif isinstance(default, list):
            metavar = "URL"
        elif default == "auto":
            metavar = "N|auto"
        elif isinstance(default, int | float) and not isinstance(default, bool):
            metavar = "N" if isinstance(default, int) else "X"
        else:
            metavar = "FILE" if "file" in name else "TEXT"
        flag = f"--{name.replace('_', '-')}"
        kind = (
            "flag"
            if isinstance(default, bool)
            else "multiple"
            if isinstance(default, list)
            else "value"
        )
        specs.append((flag, name, kind, f"{field.description}{shown}{env}", metavar))
    return specs


def stored_specs() -> list[Spec]:
    """``option_specs`` as ``options.json`` holds them."""
    stored = json.loads(OPTIONS_FILE.read_text(encoding="utf-8"))
    return [(flag, name, kind, text, metavar) for flag, name, kind, text, metavar in stored]


if __name__ == "__main__":  # after a change to RunConfig
    OPTIONS_FILE.write_text(json.dumps(option_specs(), indent=1) + "\n", encoding="utf-8")
