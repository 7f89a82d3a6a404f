import pytest

from agent.data.davis import SequenceInfo
from strategies import REGISTRY, RoundPlan, UnknownStrategyError, get_strategy
from strategies.cpu import CPUStrategy

INFO = SequenceInfo(name="s", num_frames=10, num_objects=2, height=48, width=64, num_scribbles=1)


def test_paper_schedule():
    strategy = get_strategy("paper")
    plans = [strategy.plan(i, 480.0, INFO) for i in range(1, 6)]
    assert [p.finetune_seconds for p in plans] == [5.0, 20.0, 60.0, 60.0, 60.0]
    assert [p.use_crf for p in plans] == [False, False, True, True, True]


def test_no_finetune_never_trains():
    strategy = get_strategy("no-finetune")
    assert all(strategy.plan(i, 100.0, INFO).finetune_seconds == 0 for i in range(1, 9))


def test_every_strategy_has_a_one_line_description():
    for name, cls in REGISTRY.items():
        assert cls.name == name
        assert cls.description and "\n" not in cls.description


class MyStrategy:
    name = "mine"
    description = "test strategy"

    def plan(self, interaction, time_left, info):
        return RoundPlan(finetune_seconds=1.0)


def test_user_strategy_by_module_path():
    strategy = get_strategy("tests.strategies.test_strategies:MyStrategy")
    assert strategy.plan(1, 10.0, INFO).finetune_seconds == 1.0


@pytest.mark.parametrize("name", ["nope", "tests.strategies.test_strategies:Missing", "no_such_module:X"])
def test_unknown_strategy_is_a_clear_error(name):
    with pytest.raises(UnknownStrategyError, match="strateg"):
        get_strategy(name)


def test_a_near_miss_lists_every_name_auto_included_and_a_module_is_no_strategy_class():
    """`--strategy Auto` listed cpu, no-finetune and paper only: auto, the default, looked unknown; `pkg:module` said
    "'strategies:cpu' is not a class", naming no option."""
    with pytest.raises(UnknownStrategyError) as refused:
        get_strategy("Auto")
    assert str(refused.value) == ("unknown strategy 'Auto': choose one of auto, cpu, no-finetune, paper or give "
                                  "module:Class")
    with pytest.raises(UnknownStrategyError, match=r"^strategy 'strategies:cpu' is not a class \(a module\)$"):
        get_strategy("strategies:cpu")


class FailsAtLength:
    name = "fails"
    description = "a constructor whose error spans lines"

    def __init__(self):
        raise RuntimeError("no GPU here\n  details: the driver log")


def test_a_strategy_that_fails_is_one_line_as_typed_line_gives_it(tmp_path, monkeypatch):
    """`Type: message` was written by hand: a message of several lines was all of them, an empty one `Type: `."""
    (tmp_path / "exits_bare.py").write_text("import sys\nsys.exit()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UnknownStrategyError) as refused:
        get_strategy("tests.strategies.test_strategies:FailsAtLength")
    assert str(refused.value) == ("cannot create strategy 'tests.strategies.test_strategies:FailsAtLength' without "
                                  "arguments: RuntimeError: no GPU here")
    with pytest.raises(UnknownStrategyError) as refused:
        get_strategy("exits_bare:S")
    assert str(refused.value).startswith("cannot load strategy 'exits_bare:S': SystemExit (it exits when imported")


def test_cpu_strategy_keyframes_and_quarter_resolution_crf_first_then_every_frame_at_half():
    plans = [get_strategy("cpu").plan(i, 240.0, INFO) for i in range(1, 9)]
    assert all(p.finetune_seconds == 0 for p in plans)
    assert all(p.use_crf for p in plans)
    assert [p.crf_scale for p in plans[:3]] == [0.25, 0.5, 0.5]
    assert [p.frame_stride for p in plans[:3]] == [4, 1, 1]


class WiderCRF(CPUStrategy):  # keeps the built-in's name = "cpu"
    crf_scale = 0.75


class Unnamed(MyStrategy):
    name = None


def test_a_user_strategy_named_as_a_built_in_or_not_named_is_refused():
    """Its name labels the run (summary.json, the curve): a subclass of CPUStrategy was recorded as `cpu`, and a name of
    None as null."""
    with pytest.raises(UnknownStrategyError, match=r"^strategy 'tests.strategies.test_strategies:WiderCRF' is named "
                                                   r"'cpu', as a built-in strategy: its results would read as cpu's"):
        get_strategy("tests.strategies.test_strategies:WiderCRF")
    with pytest.raises(UnknownStrategyError, match=r"its name must be non-empty text .*, got None$"):
        get_strategy("tests.strategies.test_strategies:Unnamed")
    assert isinstance(get_strategy("strategies.cpu:CPUStrategy"), CPUStrategy)  # the built-in itself, by its path
