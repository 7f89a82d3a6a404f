"""The one-line message helper every error path uses."""

from __future__ import annotations

from agent.errors import first_line, validation_problems


def test_first_line_is_the_first_message_line_or_the_type():
    assert first_line(ValueError("\n  bad value\nsecond line")) == "bad value"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(OSError("")) == "OSError"


def test_validation_problems_is_one_line():
    problems = [{"loc": ("path", "index"), "msg": "not an integer"}, {"msg": "missing"}]
    assert validation_problems(problems) == "path.index: not an integer; : missing"
