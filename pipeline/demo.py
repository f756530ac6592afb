"""``python -m pipeline.demo``: the demo of ``make run`` (``pipeline.cli.demo``), by the
name it has always had."""

import sys

from pipeline.cli.demo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
