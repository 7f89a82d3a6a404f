"""python -m agent.segment VIDEO --scribbles S --output DIR (see agent/tools/segment_cli.py)."""

import sys

from agent.tools.segment_cli import main

if __name__ == "__main__":
    sys.exit(main())
