"""The one-line message helper every error path uses."""

from __future__ import annotations

import pytest

from agent.errors import MAX_QUOTED_CHARS, first_line, one_line, os_error_line, repeated, validation_problems
from tests.conftest import run_command


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


# Every command's parser, with its required arguments: each runs as the shell runs it (runpy), given a flag none has.
COMMANDS = [["session_runner.py"], ["crf_study.py", "capture", "--davis-root", "r", "--output-dir", "o"],
            ["crf_study.py", "sweep", "cache", "--davis-root", "r"], ["finetune_study.py", "--davis-root", "r"],
            ["-m", "agent.segment", "clip.mp4", "--scribbles", "s.json", "--output", "o"], ["-m", "agent.app"],
            ["-m", "agent.train"], ["-m", "agent.bench"], ["-m", "agent.report", "run", "--output", "o.png"],
            ["-m", "agent.report", "merge", "run", "--output", "o"], ["-m", "agent.report", "compare", "a", "b"],
            ["-m", "agent.server"], ["-m", "agent.model.checkpoint", "a.pt", "b.pt"],
            *(["-m", f"agent.data.{writer}", "--davis-root", "r", "--output", "o"]
              for writer in ("robot_root", "twin_root", "pair_root")),
            [".device/pack.py", "--davis-root", "r"]]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda argv: " ".join(argv[:3]))
@pytest.mark.filterwarnings(r"ignore:'agent\.[a-z_.]+' found in sys.modules:RuntimeWarning")  # runpy of an imported module
def test_every_command_refuses_an_unknown_flag_in_one_line(argv, tmp_path, monkeypatch, capsys):
    # argparse printed the command's whole usage text, then `prog: error: unrecognized arguments: --bogus`.
    monkeypatch.chdir(tmp_path)
    assert run_command([*argv, "--bogus"], monkeypatch) == 2
    err = capsys.readouterr().err
    assert err == "error: unrecognized arguments: --bogus (see --help)\n"
    assert not any(tmp_path.iterdir())


def test_a_bad_flag_value_is_one_line_naming_the_flag(capsys):
    import session_runner

    with pytest.raises(SystemExit) as exit_info:
        session_runner.parse_args(["--max-interactions", "abc"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: argument --max-interactions: invalid int value: 'abc' (see --help)\n"


def test_an_unknown_flag_is_one_line_and_quoted_as_one_printable_line(capsys):
    from agent.tools.segment_cli import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(["clip.mp4", "--scribbles", "s.json", "--output", "out", "--bogus", "a\nb\x1b[2J"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: unrecognized arguments: --bogus a b\\x1b[2J (see --help)\n"


def test_a_missing_required_argument_is_one_line_naming_it(capsys):
    from agent.evaluation.report import main

    with pytest.raises(SystemExit) as exit_info:
        main(["merge", "run1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: the following arguments are required: --output (see --help)\n"


def test_a_sub_commands_errors_are_one_line_too(capsys):
    import crf_study

    for argv, line in ((["nope"], "argument command: invalid choice: 'nope' (choose from 'capture', 'sweep')"),
                       ([], "the following arguments are required: command"),
                       (["capture", "--every", "x"], "argument --every: invalid int value: 'x'"),
                       (["sweep", "--davis-root", "r"], "the following arguments are required: cache")):
        with pytest.raises(SystemExit) as exit_info:
            crf_study.parse_args(argv)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err == f"error: {line} (see --help)\n", argv


def test_help_is_still_argparses_own(capsys):
    import crf_study

    for argv in (["--help"], ["capture", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            crf_study.parse_args(argv)
        out, err = capsys.readouterr()
        assert exit_info.value.code == 0 and err == "" and out.startswith("usage: ") and "--davis-root" in out


def test_command_parser_takes_ascii_digits_only_in_int_and_float_options_and_subcommands(capsys):
    from agent.errors import CommandParser

    parser = CommandParser(prog="p")
    sub = parser.add_subparsers(dest="command").add_parser("run")
    sub.add_argument("--count", type=int)
    sub.add_argument("--scale", type=float)
    assert vars(parser.parse_args(["run", "--count", "12", "--scale", "0.5"])) == \
        {"command": "run", "count": 12, "scale": 0.5}
    for argv, line in ((["--count", "\u0661\u0662"], "error: argument --count: invalid int value: '\u0661\u0662'"),
                       (["--scale", "\uff10.5"], "error: argument --scale: invalid float value: '\uff10.5'")):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(["run", *argv])  # int('١٢') is 12, float('０.5') 0.5
        assert exit_.value.code == 2
        assert capsys.readouterr().err.splitlines() == [f"{line} (see --help)"]


def test_ascii_digits_holds_for_ascii_digits_only():
    from agent.errors import ascii_digits

    assert ascii_digits("00012") and ascii_digits("7")
    # Arabic-Indic, fullwidth and superscript digits pass str.isdigit(); a sign, a space or nothing is no digit
    for text in ("\u0661\u0662", "\uff11", "\u00b9", "", "+1", " 1", "1_0"):
        assert not ascii_digits(text), text
