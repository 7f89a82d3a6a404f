"""`python -m agent.bench`: the command; the code is agent/evaluation/bench.py."""

from agent.evaluation.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
