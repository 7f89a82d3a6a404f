"""`python -m agent.train`: the command; the code is agent/training/train.py."""

from agent.training.train import main

if __name__ == "__main__":
    raise SystemExit(main())
