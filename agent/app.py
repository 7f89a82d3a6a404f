"""python -m agent.app [VIDEO]: the browser page (see agent/tools/app_cli.py)."""

import sys

from agent.tools.app_cli import main

if __name__ == "__main__":
    sys.exit(main())
