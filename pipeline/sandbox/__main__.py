"""``python -m pipeline.sandbox``: the same as ``pipeline sandbox`` (one parser, the CLI's).

The sandbox package shares no code with the client; the command line is neither, so the
sandbox's options live with the others in ``pipeline.cli.commands``, and this module only
hands over.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # This process becomes `pipeline sandbox` (signals reach it as they would), rather
    # than importing it: the sandbox package never imports client code.
    os.execv(sys.executable, [sys.executable, "-m", "pipeline", "sandbox", *sys.argv[1:]])  # noqa: S606
