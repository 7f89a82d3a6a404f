"""`python -m agent.report`: the command; the code is agent/evaluation/report.py."""

from agent.evaluation.report import main

if __name__ == "__main__":
    raise SystemExit(main())
