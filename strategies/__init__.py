"""Interaction schedules, selected by name with --strategy (or `module:Class` for your own)."""

from __future__ import annotations

import importlib

from agent.errors import typed_line

from .base import RoundPlan, Strategy
from .cpu import CPUStrategy
from .no_finetune import NoFinetuneStrategy
from .paper import PaperStrategy

REGISTRY: dict[str, type] = {cls.name: cls for cls in (PaperStrategy, NoFinetuneStrategy, CPUStrategy)}


# --strategy auto: the best measured schedule per device type (docs/RESULTS.md). On CUDA only `paper` and
# `no-finetune` were measured, and `paper`'s fine-tuning lowered J there, so CUDA gets `cpu` too.
AUTO = {"cpu": "cpu", "cuda": "cpu"}


class UnknownStrategyError(ValueError):
    pass


def resolve_name(name: str, device_type: str = "cpu") -> str:
    """`auto` -> the registered name for this device type (cpu, cuda); any other name unchanged."""
    return AUTO.get(device_type, "cpu") if name == "auto" else name


def get_strategy(name: str, device_type: str = "cpu") -> Strategy:
    """A registered strategy by name (`auto`: resolve_name), or a user's own class as `package.module:ClassName`."""
    name = resolve_name(name, device_type)
    if name in REGISTRY:
        return REGISTRY[name]()
    if ":" in name:
        module_name, _, class_name = name.partition(":")
        if not module_name or not class_name:
            raise UnknownStrategyError(f"strategy '{name}': give it as package.module:ClassName")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (Exception, SystemExit) as error:  # a user's module may raise anything while it is imported
            # SystemExit too: a script that runs (argparse, sys.exit) when imported ended the run silently, even
            # with exit code 0.
            hint = " (it exits when imported: a script without `if __name__ == \"__main__\":`?)" \
                if isinstance(error, SystemExit) else ""
            raise UnknownStrategyError(f"cannot load strategy '{name}': {typed_line(error)}{hint}") from error
        if not isinstance(cls, type):
            raise UnknownStrategyError(f"strategy '{name}' is not a class (a {type(cls).__name__})")
        try:
            strategy = cls()
        except (Exception, SystemExit) as error:  # SystemExit: a constructor that parses sys.argv ended the run silently
            raise UnknownStrategyError(f"cannot create strategy '{name}' without arguments: "
                                       f"{typed_line(error)}") from error
        if not isinstance(strategy, Strategy):
            raise UnknownStrategyError(f"'{name}' is not a strategy: it needs name, description and plan()")
        # Its name labels the run (summary.json's "strategy", the curve's title): None was recorded as null, and a
        # built-in's (a subclass of CPUStrategy keeps name = "cpu") made its results read as that strategy's.
        own = strategy.name
        if not isinstance(own, str) or not own.strip():
            raise UnknownStrategyError(f"strategy '{name}': its name must be non-empty text (it labels the run's "
                                       f"results), got {own!r}")
        if (own == "auto" or own in REGISTRY) and cls is not REGISTRY.get(own):
            raise UnknownStrategyError(f"strategy '{name}' is named '{own}', as a built-in strategy: its results would "
                                       f"read as {own}'s; give the class a name of its own (name = \"...\")")
        return strategy
    raise UnknownStrategyError(
        f"unknown strategy '{name}': choose one of auto, {', '.join(sorted(REGISTRY))} or give module:Class"
    )


def describe_strategies() -> str:
    """One line per strategy, `auto` first."""
    lines = [f"auto: the best measured schedule for the device ({', '.join(f'{k}: {v}' for k, v in AUTO.items())})"]
    return "\n".join(lines + [f"{name}: {cls.description}" for name, cls in sorted(REGISTRY.items())])


__all__ = ["AUTO", "REGISTRY", "RoundPlan", "Strategy", "UnknownStrategyError", "describe_strategies",
           "get_strategy", "resolve_name"]
