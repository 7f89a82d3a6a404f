"""The core types every strategy uses (defined in the core, agent/inference/plan.py)."""

from agent.inference.plan import RoundPlan, Strategy

__all__ = ["RoundPlan", "Strategy"]
