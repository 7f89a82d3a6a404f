"""Interaction schedules, selected by name with --strategy (or `module:Class` for your own)."""

from __future__ import annotations

import importlib

from .base import RoundPlan, Strategy
from .cpu import CPUStrategy
from .no_finetune import NoFinetuneStrategy
from .paper import PaperStrategy

REGISTRY: dict[str, type] = {cls.name: cls for cls in (PaperStrategy, NoFinetuneStrategy, CPUStrategy)}


class UnknownStrategyError(ValueError):
    pass


def get_strategy(name: str) -> Strategy:
    """A registered strategy by name, or a user's own class given as `package.module:ClassName`."""
    if name in REGISTRY:
        return REGISTRY[name]()
    if ":" in name:
        module_name, _, class_name = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as error:
            raise UnknownStrategyError(f"cannot load strategy '{name}': {error}") from error
        strategy = cls()
        if not isinstance(strategy, Strategy):
            raise UnknownStrategyError(f"'{name}' is not a strategy: it needs name, description and plan()")
        return strategy
    raise UnknownStrategyError(
        f"unknown strategy '{name}': choose one of {', '.join(sorted(REGISTRY))} or give module:Class"
    )


def describe_strategies() -> str:
    return "; ".join(f"{name}: {cls.description}" for name, cls in sorted(REGISTRY.items()))


__all__ = ["REGISTRY", "RoundPlan", "Strategy", "UnknownStrategyError", "describe_strategies", "get_strategy"]
