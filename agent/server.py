"""`python -m agent.server`: the local DAVIS Interactive evaluation server; the code is agent/evaluation/server.py."""

from agent.evaluation.server import main

if __name__ == "__main__":
    raise SystemExit(main())
