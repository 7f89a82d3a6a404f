"""The one-line message helper every error path uses."""

from __future__ import annotations

from agent.errors import MAX_QUOTED_CHARS, first_line, one_line, os_error_line, repeated, validation_problems


def test_first_line_is_the_first_message_line_or_the_type():
    assert first_line(ValueError("\n  bad value\nsecond line")) == "bad value"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(OSError("")) == "OSError"


def test_one_line_quotes_a_foreign_text_as_one_short_printable_line():
    assert one_line("  a server's\n\tmessage ") == "a server's message"
    assert one_line("\x1b[2J\u202eevil\x07") == "\\x1b[2J\\u202eevil\\x07"  # escapes, not sent to the terminal
    long = one_line("x" * 5000)
    assert long == "x" * MAX_QUOTED_CHARS + "..."
    assert one_line(ValueError("boom")) == "boom"


def test_validation_problems_is_one_line():
    problems = [{"loc": ("path", "index"), "msg": "not an integer"}, {"msg": "missing"}]
    assert validation_problems(problems) == "path.index: not an integer; : missing"


def test_os_error_line_names_the_path():
    import errno

    error = OSError(errno.ENAMETOOLONG, "File name too long", "/x/" + "e" * 300)
    assert os_error_line(error) == f"/x/{'e' * 300}: File name too long"
    assert os_error_line(OSError("disk on fire")) == "a path: disk on fire"


def test_every_command_names_a_path_the_file_system_refuses_in_one_line(tmp_path, capsys, tiny_synthetic_root):
    import crf_study
    import finetune_study
    from agent.evaluation import report
    from agent.tools import segment_cli
    from agent.training import train

    long = tmp_path / ("e" * 300)  # one component beyond NAME_MAX: Path.exists() raises, not returns False
    commands = {
        "crf_study capture": lambda: crf_study.main(["capture", "--davis-root", str(tiny_synthetic_root),
                                                     "--output-dir", str(long)]),
        "finetune_study": lambda: finetune_study.main(["--davis-root", str(tiny_synthetic_root), "--steps", "1",
                                                       "--output", f"{long}.csv"]),
        "agent.train": lambda: train.main(["--iterations", "1", "--output-dir", str(long)]),
        "agent.segment": lambda: segment_cli.main([str(long), "--scribbles", "s.json", "--output", str(tmp_path / "o")]),
        "agent.report": lambda: report.main([str(tmp_path), "--output", f"{long}.png"]),
    }
    for name, command in commands.items():
        assert command() == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {long}") and "File name too long" in err[0], (name, err)


def test_repeated_names_the_values_given_more_than_once_in_first_order():
    assert repeated([3, 1, 3, 2, 1, 3]) == [3, 1]
    assert repeated(["a", "b"]) == []


def test_counts_are_singular_for_one() -> None:
    """"masks for 1 frames" was printed for one image."""
    from agent.errors import counted

    assert [counted(n, "frame") for n in (0, 1, 2)] == ["0 frames", "1 frame", "2 frames"]
