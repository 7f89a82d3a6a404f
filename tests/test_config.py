"""agent.config: the remote-mode and shard fields of SessionConfig, ServerConfig, and how the CLI fills them."""

from __future__ import annotations

import codecs
import dataclasses
import json
import os
import re

import numpy as np
import pytest

import session_runner
from agent.config import (
    AgentConfig,
    ConfigError,
    ModelConfig,
    RunConfig,
    ServerConfig,
    SessionConfig,
    TrainConfig,
    TrainRunConfig,
    parse_shard,
)
from tests.conftest import bare_flags


def test_remote_session_fields():
    config = SessionConfig(host="http://127.0.0.1:8000", user_key="me", subset="test-dev", shard="2/4")
    assert config.remote and parse_shard(config.shard) == (2, 4)
    assert not SessionConfig().remote


@pytest.mark.parametrize("values, message", [
    ({"host": "http://h:1", "subset": "test-dev"}, "session.user_key is required"),
    ({"host": "http://h:1", "user_key": "k"}, "a remote host plays test-dev only"),
    ({"host": "ftp://h", "user_key": "k", "subset": "test-dev"}, "session.host must be localhost or an http"),
    ({"host": "http://:8000", "user_key": "k", "subset": "test-dev"}, "an http\\(s\\):// URL with a host name"),
    ({"host": "http://[::1", "user_key": "k", "subset": "test-dev"}, r"session.host 'http://\[::1' is not a valid URL"),
    ({"host": "http://h:99999", "user_key": "k", "subset": "test-dev"}, "Port out of range"),
    # Every request went to `/?x=1/api/...`: the framework appends its paths to the URL.
    ({"host": "http://h:1/?x=1", "user_key": "k", "subset": "test-dev"}, "has a query or fragment"),
    ({"host": "http://h:1#top", "user_key": "k", "subset": "test-dev"}, "has a query or fragment"),
    ({"host": "http://h:1/davis?", "user_key": "k", "subset": "test-dev"}, "has a query or fragment"),
    ({"host": "http://me:secret@h:1", "user_key": "k", "subset": "test-dev"}, "holds a user name or password"),
    ({"host": "https://me@h", "user_key": "k", "subset": "test-dev"}, "holds a user name or password"),
    ({"subset": "test-dev"}, "test-dev has no public annotations"),
    ({"shard": "3/2"}, "session.shard must be K/N"),
    ({"shard": "0/2"}, "session.shard must be K/N"),
    ({"shard": "half"}, "session.shard must be K/N"),
    ({"read_timeout": 0}, "session.read_timeout must be"),
    # The socket refused it: an OverflowError traceback in the preflight's connection check.
    ({"connect_timeout": 1e300}, r"session.connect_timeout must be a number of seconds in \(0, 86400\]"),
    ({"read_timeout": 1e12}, "session.read_timeout must be"),
    ({"retries": -1}, r"session.retries must be in 0..20"),
    # urllib3 retried a server that was gone for ever (backoff up to 120 s per retry).
    ({"retries": 10**9}, r"session.retries must be in 0..20, got 1000000000"),
    ({"sequences": ()}, "session.sequences must name sequences"),
    # `--sequences dog,dog` played dog once without a word.
    ({"sequences": ("dog", "goat", "dog")}, "session.sequences names dog more than once"),
])
def test_bad_remote_or_shard_values_are_one_clear_error(values, message):
    with pytest.raises(ConfigError, match=message):
        SessionConfig(**values)


def test_a_password_in_the_host_is_refused_without_being_repeated():
    """A `user:pass@` URL was written as given to config.json, summary.json and the log."""
    with pytest.raises(ConfigError) as error:
        SessionConfig(host="http://me:s3cret@h:1", user_key="k", subset="test-dev")
    assert "s3cret" not in str(error.value) and "for h holds" in str(error.value)


@pytest.mark.parametrize("host, message", [
    # Found only by the connection check, once the output folder and the checkpoint had been checked.
    ("http://local host:8000", r"holds a space or control character: a URL has none \(in its path, write a space"),
    ("http://h:8000/\tdavis", "holds a space or control character"),  # urlparse dropped the tab without a word
    ("http://h:1\n", "holds a space or control character"),
    # requests drops port 0: the health check went to port 80.
    ("http://127.0.0.1:0", r"'http://127.0.0.1:0' has port 0: give the server's port, 1..65535"),
    ("http://[::1]:0", "has port 0"),
    # urlparse's "Port could not be cast to integer value as ':1:8000'" alone.
    ("http://::1:8000/davis", r"an IPv6 address goes in brackets: http://\[::1\]:8000/davis\)$"),
    ("https://::1", r"an IPv6 address goes in brackets: https://\[::1\]\)$"),
    ("http://h:80:90", r"Port could not be cast to integer value as '80:90'\)$"),  # no IPv6: no hint
])
def test_a_malformed_host_url_is_one_error_before_any_work(host, message):
    with pytest.raises(ConfigError, match=message):
        SessionConfig(host=host, user_key="k", subset="test-dev")


@pytest.mark.parametrize("host", ["http://h:1", "https://eval.example.org", "HTTP://Eval.Example.org:8443/davis/",
                                  "http://[::1]:8000", "http://127.0.0.1:8000/davis%20server", "http://h_1:80"])
def test_a_host_url_the_client_can_use_is_taken(host):
    # The framework joins its API paths to the URL (os.path.join): a path prefix is kept.
    assert SessionConfig(host=host, user_key="k", subset="test-dev").remote


def test_cli_host_with_a_space_is_one_error_line_at_argument_checking(capsys):
    # The arguments' line, before the preflight checks the output folder and the checkpoint.
    assert session_runner.main(["--host", "http://local host:8000", "--user-key", "k"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: config: session.host 'http://local host:8000' holds a space or control character: a URL has "
                   "none (in its path, write a space as %20)"], err


def test_server_config_limits():
    assert ServerConfig().port == 8000
    with pytest.raises(ConfigError, match="server.max_time must be seconds in"):
        ServerConfig(max_time=900)
    with pytest.raises(ConfigError, match="server.user_keys must be non-empty"):
        ServerConfig(user_keys=("",))
    with pytest.raises(ConfigError, match="server.sequences names dog more than once"):
        ServerConfig(sequences=("dog", "dog"))


@pytest.mark.parametrize("key, what", [("secret\r", r"'\\r' at position 6"), ("a\nb", r"'\\n' at position 1"),
                                       (" secret", "' ' at position 0"), ("ключ", "'к' at position 0")])
def test_a_user_key_no_http_header_can_carry_is_one_error_before_the_model(key, what):
    # requests refused it once the model was built, as "evaluation server unavailable: ... InvalidHeader"; a
    # non-Latin-1 key was http.client's "'latin-1' codec can't encode". The key itself is never printed.
    remote = {"host": "http://h:1", "subset": "test-dev"}
    with pytest.raises(ConfigError, match=f"session.user_key cannot be sent in an HTTP header: character {what}") \
            as error:
        SessionConfig(**remote, user_key=key)
    assert key.strip() not in str(error.value)
    with pytest.raises(ConfigError, match="server.user_keys cannot be sent"):
        ServerConfig(user_keys=("fine", key))
    assert SessionConfig(**remote, user_key="josé@example.org:1").user_key  # Latin-1 and punctuation are sent


def test_cli_host_implies_test_dev_and_the_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("DAVIS_USER_KEY", "from-env")
    config = session_runner.resolve_config(session_runner.parse_args(["--host", "http://h:1", "--shard", "1/3"]))
    assert (config.session.subset, config.session.user_key, config.session.shard) == ("test-dev", "from-env", "1/3")
    monkeypatch.delenv("DAVIS_USER_KEY")
    local = session_runner.resolve_config(session_runner.parse_args([]))
    assert (local.session.subset, local.session.user_key, local.session.remote) == ("val", None, False)


@pytest.mark.parametrize(("argv", "given"), [(["--shard", "-1/2"], "-1/2"),
                                             (["--shard", "-3/-2", "--seed", "1"], "-3/-2"),
                                             (["--shard=-1/2"], "-1/2")])
def test_a_negative_shard_is_one_line_about_it(capsys, argv, given):
    # argparse took `-1/2` for an option: "argument --shard: expected one argument", below its usage text.
    assert session_runner.main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"error: config: session.shard must be K/N with 1 <= K <= N (e.g. 2/4), got '{given}'"


SHARD_LINE = "error: config: session.shard must be K/N with 1 <= K <= N (e.g. 2/4), got '{}'"


@pytest.mark.parametrize(("argv", "line"), [
    (["--shard", "\u0661/\u0662"], SHARD_LINE.format("\u0661/\u0662")),  # Arabic-Indic 1/2
    (["--shard", "\uff11/\uff12"], SHARD_LINE.format("\uff11/\uff12")),  # fullwidth 1/2
    (["--max-interactions", "\u0668"], "error: argument --max-interactions: invalid int value: '\u0668' (see --help)"),
    (["--seed", "\uff11\uff12"], "error: argument --seed: invalid int value: '\uff11\uff12' (see --help)"),
    (["--max-time", "\uff13\uff10"], "error: argument --max-time: invalid float value: '\uff13\uff10' (see --help)"),
    (["--set", "agent.seed=!!int \u0661\u0662"],
     "error: config: agent.seed: expected a decimal integer, got the text '\u0661\u0662'"),
    (["--set", "session.max_time=!!float \uff13\uff10"],
     "error: config: session.max_time: expected a decimal number, got the text '\uff13\uff10'"),
])
def test_numbers_in_other_scripts_digits_are_one_line_naming_the_option(capsys, tmp_path, argv, line):
    # int(), float() and str.isdigit() take any script's digits: `--shard ١/٢` played shard 1 of 2. (An absent root:
    # a number taken is then a quick other error, not a session played.)
    try:
        code = session_runner.main([*argv, "--davis-root", str(tmp_path / "absent"), "--output-dir", str(tmp_path / "o")])
    except SystemExit as exit_:  # argparse's own error (CommandParser's one line)
        code = exit_.code
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [line]


def test_ascii_digits_are_still_numbers():
    args = session_runner.parse_args(["--max-interactions", "8", "--seed", "12", "--max-time", "30", "--shard", "1/2"])
    config = session_runner.resolve_config(args)
    assert (config.session.max_interactions, config.agent.seed, config.session.max_time) == (8, 12, 30.0)
    assert parse_shard(config.session.shard) == (1, 2)


def test_train_sizes_and_levels_in_other_scripts_digits_are_refused():
    from agent.training import train

    with pytest.raises(ConfigError, match="--input-size must be HxW"):
        train.resolve_config(train.parse_args(["--input-size", "\uff14\uff18x80"]))
    with pytest.raises(ConfigError, match="model.feature_levels: item 2 is str '\u0662'"):
        train.resolve_config(train.parse_args(["--feature-levels", "1,\u0662"]))


@pytest.mark.parametrize(("text", "section"), [('{"session": 5}', "session"), ('{"agent": {"crf": [1]}}', "agent.crf")])
def test_a_config_section_that_is_not_a_mapping_is_one_error(tmp_path, text, section):
    # It used to be dropped silently whenever a flag set a field of the same section.
    from agent.config import RunConfig, load_config

    path = tmp_path / "run.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"{path}: section '{section}' must be a mapping"):
        load_config(RunConfig, [path], [], {"session.max_time": 30.0})


def test_exponent_numbers_are_numbers_in_files_and_set(tmp_path):
    # PyYAML alone reads 5e-1 as text (YAML 1.1), so a valid JSON config was refused.
    from agent.config import RunConfig, load_config

    path = tmp_path / "run.json"
    path.write_text('{"agent": {"crf": {"scale": 5e-1}}}')
    config = load_config(RunConfig, [path], ["session.max_time=1e2"])
    assert config.agent.crf.scale == 0.5 and config.session.max_time == 100.0


@pytest.mark.parametrize(("assignment", "message"), [
    ("session.max_time=true", "session.max_time: expected a number, got True"),  # it was a 1 s budget
    ("agent.identity.weight=false", "agent.identity.weight: expected a number, got False"),  # 0
    ("agent.finetune.scale_range=[true, 2]", "agent.finetune.scale_range: expected a number, got True"),
    ("agent.inference_scale=true", "agent.inference_scale"),  # float | str: dacite names the field
    ("session.max_time=1" + "0" * 400, r"session.max_time: 10000000000000000000\.\.\. \(401 digits\) is beyond a "
                                       "float's range"),  # an OverflowError traceback
    ("session.max_interactions=true", "session.max_interactions: expected an integer, got True"),
])
def test_a_number_field_takes_numbers_only(assignment, message):
    from agent.config import RunConfig, load_config

    with pytest.raises(ConfigError, match=message):
        load_config(RunConfig, [], [assignment])
    assert load_config(RunConfig, [], ["session.max_time=30"]).session.max_time == 30.0  # an integer is a number


def test_text_where_a_list_belongs_is_one_error_not_characters():
    from agent.config import RunConfig, load_config

    with pytest.raises(ConfigError, match=r"session.sequences must be a list, got the text 'dog' \(write \[dog\]\)"):
        load_config(RunConfig, [], ["session.sequences=dog"])
    assert load_config(RunConfig, [], ["session.sequences=[dog]"]).session.sequences == ("dog",)


def test_a_list_of_the_wrong_length_says_so():
    # dacite's message was 'should be "tuple" instead of value "(1,)" of type "tuple"'
    from agent.config import ModelConfig, RunConfig, from_dict, load_config

    with pytest.raises(ConfigError, match="agent.finetune.scale_range must be a list of 2 values, got 1"):
        load_config(RunConfig, [], ["agent.finetune.scale_range=[1]"])
    with pytest.raises(ConfigError, match=r"model_config: input_size must be a list of 2 values, got 3"):
        from_dict(ModelConfig, {"input_size": [48, 80, 3]}, strict=False, where="model_config")  # a checkpoint's
    with pytest.raises(ConfigError, match=r"model_config: mean must be a list of 3 values, got 2"):
        from_dict(ModelConfig, {"mean": [0.5, 0.5]}, strict=False, where="model_config")


@pytest.mark.parametrize(("assignment", "message"), [
    ('model.input_size=[48, "80"]', "model.input_size: item 2 is str '80', expected an integer"),
    ("model.input_size=[48, 80.5]", "model.input_size: item 2 is float 80.5, expected an integer"),
    ("model.feature_levels=[1, 2.5]", "model.feature_levels: item 2 is float 2.5, expected an integer"),
    ("model.mean=[0.4, 0.4, x]", "model.mean: item 3 is str 'x', expected a number"),
    ("train.holdout=[dog, 5]", "train.holdout: item 2 is int 5, expected text"),
    ("train.holdout=[dog, true]", "train.holdout: item 2 is bool True, expected text"),
    ("train.val_sequences=[dog, null]", "train.val_sequences: item 2 is null, expected text"),
])
def test_a_list_item_of_the_wrong_type_names_the_item(assignment, message):
    # dacite's message was 'should be "tuple" instead of value "(48, '80')" of type "tuple"': the list's type.
    from agent.config import TrainRunConfig, load_config

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(TrainRunConfig, [], [assignment])
    config = load_config(TrainRunConfig, [], ["model.input_size=[48, 80.0]", "model.mean=[0.4, 1, 0.5]"])
    assert config.model.input_size == (48, 80) and config.model.mean == (0.4, 1.0, 0.5)


def test_a_list_item_of_the_wrong_type_in_a_config_file_names_the_file(tmp_path):
    from agent.config import RunConfig, load_config

    path = tmp_path / "run.json"
    path.write_text('{"session": {"sequences": [1, 2]}}')
    with pytest.raises(ConfigError, match=re.escape(f"config file {path}: session.sequences: item 1 is int 1, "
                                                    "expected text")):
        load_config(RunConfig, [path])


def test_a_key_given_twice_in_a_config_file_is_one_error(tmp_path):
    from agent.config import RunConfig, load_config

    path = tmp_path / "run.json"
    path.write_text('{"session": {"max_time": 30}, "session": {"subset": "val"}}')  # the first would be lost
    with pytest.raises(ConfigError, match=r"key\(s\) session given twice"):
        load_config(RunConfig, [path])


@pytest.mark.parametrize(("assignment", "message"), [
    ("session.davis_root=[1]", "session.davis_root must be a path, got list [1]"),
    ("agent.checkpoint={a: 1}", "agent.checkpoint must be a path, got dict"),
    ("session.davis_root=", "session.davis_root is an empty path"),  # it would have been the working directory
])
def test_path_fields_name_themselves(assignment, message):
    from agent.config import RunConfig, load_config

    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(RunConfig, [], [assignment])


def test_a_tilde_in_a_path_field_is_the_home_folder(tmp_path, monkeypatch):
    # Not expanded, a config file's "~/runs/a" (or --output-dir=~/runs/a) made a folder named `~` for the
    # outputs while the framework's report went to the home folder's, which did not exist: a traceback.
    from agent.config import RunConfig, load_config

    monkeypatch.setenv("HOME", str(tmp_path))
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"session": {"davis_root": "~/davis", "output_dir": "~/runs/a"}}))
    config = load_config(RunConfig, [path], ["agent.checkpoint=~/model.pt"],
                         {"session.output_dir": None, "session.davis_root": None})
    assert config.session.davis_root == tmp_path / "davis" and config.session.output_dir == tmp_path / "runs" / "a"
    assert config.agent.checkpoint == tmp_path / "model.pt"
    flags = session_runner.resolve_config(session_runner.parse_args(["--output-dir=~/runs/b"]))
    assert flags.session.output_dir == tmp_path / "runs" / "b"


def test_a_tilde_of_an_unknown_user_is_one_config_error():
    # pathlib raises RuntimeError ("Could not determine home directory."): it was a traceback
    from agent.config import RunConfig, load_config

    with pytest.raises(ConfigError, match="session.output_dir: ~nosuchuser-s15/x: .*no such user"):
        load_config(RunConfig, [], ["session.output_dir=~nosuchuser-s15/x"])


@pytest.mark.parametrize("field", ["max_steps", "pseudo_label_frames"])
@pytest.mark.parametrize("value", ["-1", "2.5", "many"])
def test_finetune_counts_are_counts(field, value):
    from agent.config import RunConfig, load_config

    with pytest.raises(ConfigError, match=f"finetune.{field}"):
        load_config(RunConfig, [], [f"agent.finetune.{field}={value}"])
    assert getattr(load_config(RunConfig, [], [f"agent.finetune.{field}=30"]).agent.finetune, field) == 30


def test_a_directory_as_config_file_or_checkpoint_says_so(tmp_path):
    from agent.config import read_config_file
    from agent.model.checkpoint import CheckpointError, read_checkpoint_config

    with pytest.raises(ConfigError, match="is a directory, not a JSON or YAML file"):
        read_config_file(tmp_path)
    with pytest.raises(CheckpointError, match=r"is a directory: name a .pt file \(it holds no model.pt\)$"):
        read_checkpoint_config(tmp_path)


@pytest.mark.parametrize(("cls", "field", "value", "message"), [
    ("TransferConfig", "topk", 10**9, r"transfer.topk must be in 1..1024"),
    ("TransferConfig", "max_reference_pixels", 10**12, r"transfer.max_reference_pixels must be in 1..1048576"),
    ("TransferConfig", "chunk_size", 0, r"transfer.chunk_size must be in 1.."),
    ("TransferConfig", "grid_stride", 100_000, r"transfer.grid_stride must be in 1..16"),
    ("TransferConfig", "detail_band", 10**6, r"transfer.detail_band must be in 0..64"),
    ("ScribbleConfig", "dilation", 10**9, r"scribbles.dilation must be in 1..64"),
    ("ScribbleConfig", "correction_dilation", 65, r"scribbles.correction_dilation must be in 0..64"),
    ("ModelConfig", "embedding_dim", 10**8, r"model.embedding_dim must be in 1..4096"),  # 100 GB of decoder weights
    ("ModelConfig", "input_size", (100_000, 100_000), r"model.input_size must be \(H, W\) of 16..4096 pixels"),
])
def test_sizes_have_upper_bounds_before_any_allocation(cls, field, value, message):
    # A typo would otherwise ask for terabytes, or a grid of a few cells, once the model is built.
    import agent.config as config

    with pytest.raises(ConfigError, match=message):
        getattr(config, cls)(**{field: value})


def test_a_config_file_nested_too_deeply_is_one_error(tmp_path):
    from agent.config import RunConfig, load_config

    path = tmp_path / "deep.yaml"
    path.write_text("[" * 50000 + "]" * 50000)  # PyYAML recursed until RecursionError (a traceback)
    with pytest.raises(ConfigError, match="is not valid JSON or YAML \\(nested too deeply to parse\\)"):
        load_config(RunConfig, [path])
    with pytest.raises(ConfigError, match="cannot parse the value \\(nested too deeply to parse\\)"):
        load_config(RunConfig, [], ["session.sequences=" + "[" * 50000 + "]" * 50000])


@pytest.mark.parametrize(("value", "problem"), [("1" + "0" * 5000, "Exceeds the limit"),
                                                ("2020-13-45", "month must be in 1..12")])
def test_a_value_the_yaml_reader_cannot_construct_is_one_error(tmp_path, value, problem):
    # int() and datetime() raised ValueError inside PyYAML: a traceback, from a file and from --set alike.
    from agent.config import RunConfig, load_config

    path = tmp_path / "run.yaml"
    path.write_text(f"session:\n  shard: {value}\n")
    with pytest.raises(ConfigError, match=f"is not valid JSON or YAML \\({problem}"):
        load_config(RunConfig, [path])
    with pytest.raises(ConfigError, match=f"cannot parse the value \\({problem}"):
        load_config(RunConfig, [], [f"session.shard={value}"])


def test_unknown_keys_are_named_with_their_section_even_when_not_text(tmp_path):
    # The message joined the keys as they were: `1: 2` or `null: 2` was a TypeError traceback; and it listed the
    # top level's keys (session, agent) as the known ones of any section.
    from agent.config import RunConfig, load_config

    path = tmp_path / "run.yaml"
    path.write_text("session:\n  1: 2\n  null: 3\n  subset: val\n  x: 4\n")
    with pytest.raises(ConfigError, match=r"run.yaml: unknown key\(s\) session.1, session.None, session.x \(known in "
                                          r"session: subset, davis_root, "):
        load_config(RunConfig, [path])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) agent.crf.foo \(known in agent.crf: iterations, "):
        load_config(RunConfig, [], ["agent.crf={iterations: 3, foo: 1}"])
    path.write_text('{"model": {}, "7": 1}')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 7, model \(known: session, agent\)"):
        load_config(RunConfig, [path])


def test_the_repeated_key_check_compares_keys_in_linear_time(monkeypatch):
    # It counted each key with list.count: 40,000 keys took 22 s to read, a 1 MB file minutes.
    from agent import config

    comparisons = 0

    class Key(str):
        __hash__ = str.__hash__

        def __eq__(self, other):
            nonlocal comparisons
            comparisons += 1
            return str.__eq__(self, other)

    loader = config._yaml_loader()
    construct = loader.construct_object
    monkeypatch.setattr(loader, "construct_object", lambda self, node, deep=False: (
        lambda value: Key(value) if isinstance(value, str) else value)(construct(self, node, deep=deep)))
    keys = 2000
    assert len(config._yaml_load("{" + ", ".join(f"k{i}: 0" for i in range(keys)) + "}")) == keys
    assert comparisons < 10 * keys  # list.count: keys**2
    with pytest.raises(Exception, match="k7 given twice"):
        config._yaml_load("{k7: 1, k8: 2, k7: 3}")


def test_a_huge_config_file_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    from agent import config
    from agent.config import RunConfig, load_config

    path = tmp_path / "huge.yaml"
    path.write_text("session:\n" + "".join(f"  k{i}: {i}\n" for i in range(100)))
    monkeypatch.setattr(config, "MAX_CONFIG_BYTES", 100)  # 1 MB in use: a 38 MB file parsed for minutes
    monkeypatch.setattr(config, "_yaml_load", lambda text: pytest.fail("parsed"))
    with pytest.raises(ConfigError, match="huge.yaml is .* MB: a configuration is at most"):
        load_config(RunConfig, [path])


@pytest.mark.parametrize(("make", "what"), [
    (lambda path: os.mkfifo(path), "a FIFO \\(named pipe\\)"),  # reading it waited for a writer forever
    (lambda path: path.symlink_to("/dev/zero"), "a character device"),  # it was "does not exist"
])
def test_a_fifo_or_device_as_config_file_says_so(tmp_path, make, what):
    from agent.config import read_config_file

    path = tmp_path / "run.yaml"
    make(path)
    with pytest.raises(ConfigError, match=f"config file {path} is {what}, not a JSON or YAML file"):
        read_config_file(path)


def test_a_yaml_merge_key_is_read_as_yaml_does(tmp_path):
    from agent.config import RunConfig, load_config

    path = tmp_path / "run.yaml"  # it was "not valid JSON or YAML (could not determine a constructor ...)"
    path.write_text("_defaults: &defaults {max_time: 30, max_interactions: 2}\n"
                    "session:\n  <<: *defaults\n  max_time: 40\n")
    with pytest.raises(ConfigError, match="unknown key\\(s\\) _defaults"):  # past the YAML reader now
        load_config(RunConfig, [path])
    path.write_text("session: &s {max_time: 30}\nagent: {seed: 1}\n")
    assert load_config(RunConfig, [path]).session.max_time == 30
    path.write_text("session:\n  <<: {max_time: 30, max_interactions: 2}\n  max_time: 40\n")
    config = load_config(RunConfig, [path])
    assert (config.session.max_time, config.session.max_interactions) == (40, 2)
    path.write_text("session:\n  <<: {max_time: 30}\n  max_time: 40\n  max_time: 50\n")
    with pytest.raises(ConfigError, match="max_time given twice"):
        load_config(RunConfig, [path])


def _sections(cls, prefix: str = "") -> list[str]:
    """Every nested config dataclass of cls as its --set prefix (session, agent, agent.crf, ...)."""
    import dataclasses

    names = []
    for item in dataclasses.fields(cls):
        kind = item.default_factory if item.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(kind):
            names.append(prefix + item.name)
            names += _sections(kind, f"{prefix}{item.name}.")
    return names


def test_session_runner_help_lists_every_config_section(capsys):
    # agent.identity and agent.flow were missing from the list, so --set agent.flow.height=... looked unsupported.
    from agent.config import RunConfig

    with pytest.raises(SystemExit):
        session_runner.parse_args(["--help"])
    listed = capsys.readouterr().out.split("(sections: ")[1].split(")")[0].replace("\n", " ")
    assert {name.strip() for name in listed.split(",")} == set(_sections(RunConfig))


def test_session_runner_help_describes_every_flag(capsys):
    with pytest.raises(SystemExit):
        session_runner.parse_args(["--help"])
    assert bare_flags(capsys.readouterr().out) == []  # --seed had none


def test_a_set_section_and_a_set_field_of_it_combine_in_either_order():
    # `agent.crf=3` then `agent.crf.workers=2` was a TypeError traceback (null: an AttributeError); a section after
    # a field of it replaced the field without a word (a config file's fields merge with it).
    from agent.config import RunConfig, load_config

    for earlier in ("agent.crf=3", "agent.crf=null", "agent.crf=[1]", "agent=null"):
        assert load_config(RunConfig, [], [earlier, "agent.crf.workers=2"]).agent.crf.workers == 2
    for assignments in (["agent.crf.workers=2", "agent.crf={iterations: 3}"],
                        ["agent.crf={iterations: 3}", "agent.crf.workers=2"]):
        crf = load_config(RunConfig, [], assignments).agent.crf
        assert (crf.iterations, crf.workers) == (3, 2)
    assert load_config(RunConfig, [], ["agent.crf.workers=2", "agent.crf.workers=1"]).agent.crf.workers == 1


@pytest.mark.parametrize(("assignment", "message"), [
    ("agent.finetune.scale_range=0.5", "agent.finetune.scale_range must be a list, got float 0.5"),
    ("session.sequences=5", "session.sequences must be a list, got int 5"),
    ("session.sequences={dog: 1}", "session.sequences must be a list, got dict"),
])
def test_a_number_or_mapping_where_a_list_belongs_names_the_field(assignment, message):
    # dacite's tuple cast said only "'float' object is not iterable" (or "dictionary update sequence element ...").
    from agent.config import ModelConfig, RunConfig, from_dict, load_config

    with pytest.raises(ConfigError, match=message):
        load_config(RunConfig, [], [assignment])
    with pytest.raises(ConfigError, match=r"model_config: input_size must be a list, got int 240"):
        from_dict(ModelConfig, {"input_size": 240}, strict=False, where="model_config")  # a checkpoint's
    assert load_config(RunConfig, [], ["session.sequences=null"]).session.sequences is None


def test_a_yaml_alias_bomb_is_one_error_before_any_walk_over_it(tmp_path):
    # Nine aliases of nine aliases ...: PyYAML shares the lists, but the error message printing the value took
    # seconds and hundreds of MB at 8 levels (here 6), nine times that per level more.
    from agent.config import RunConfig, load_config

    bomb = "[" + ",".join(["&a0 [x,x,x,x,x,x,x,x,x]"] + [f"&a{i + 1} [" + ",".join([f"*a{i}"] * 9) + "]"
                                                          for i in range(5)]) + "]"  # 9**6 values
    path = tmp_path / "bomb.yaml"
    path.write_text(f"session:\n  max_time: {bomb}\n")
    with pytest.raises(ConfigError, match="not valid JSON or YAML \\(holds more than 100,000 values with its "
                                          "aliases expanded"):
        load_config(RunConfig, [path])
    with pytest.raises(ConfigError, match="cannot parse the value \\(holds more than 100,000 values"):
        load_config(RunConfig, [], [f"session.sequences={bomb}"])
    path.write_text("crf: &crf {iterations: 3}\n")  # an alias used as meant is read as before
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(RunConfig, [path])
    path.write_text("session:\n  sequences: &s [dog, cat]\nagent:\n  crf: {iterations: 3}\n")
    assert load_config(RunConfig, [path]).session.sequences == ("dog", "cat")


@pytest.mark.parametrize(("text", "problem"), [
    ("session:\n\tmax_time: 100\n", r"line 2, column 1: found character '\\t' that cannot start any token"),
    ('{"session": {"max_time": 100} // a comment\n}', "line 1, column 31: expected ',' or '}'"),
    ("session: {}\n---\nagent: {}\n", "line 2, column 1: expected a single document in the stream, but found another"),
])
def test_a_config_file_yaml_cannot_parse_names_the_problem_and_its_line(tmp_path, text, problem):
    # The error's first line was its context alone: "while scanning for the next token" (a tab), "while parsing a
    # flow mapping" (a JSON comment), naming neither the problem nor where it is.
    from agent.config import RunConfig, load_config

    path = tmp_path / "run.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"is not valid JSON or YAML \\({problem}"):
        load_config(RunConfig, [path])
    with pytest.raises(ConfigError, match="cannot parse the value \\(line 1, column 6: found unexpected end of stream"):
        load_config(RunConfig, [], ["session.strategy='auto"])


def test_an_unknown_key_in_one_of_several_config_files_names_that_file(tmp_path):
    # An older run's config.json with a field since removed was "config: unknown key(s) ...", naming no file.
    from agent.config import RunConfig, load_config, to_dict

    current, old = tmp_path / "current.json", tmp_path / "old" / "config.json"
    old.parent.mkdir()
    current.write_text(json.dumps(to_dict(RunConfig())))
    data = to_dict(RunConfig())
    data["agent"]["crf"]["use_gpu"] = True
    old.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=f"config file {old}: unknown key\\(s\\) agent.crf.use_gpu \\(known in agent.crf"):
        load_config(RunConfig, [current, old])
    with pytest.raises(ConfigError, match=f"config file {old}: agent.finetune.scale_range must be a list of 2"):
        old.write_text('{"agent": {"finetune": {"scale_range": [1, 2, 3]}}}')
        load_config(RunConfig, [current, old])


def test_an_integer_with_a_leading_zero_is_decimal_in_files_and_set(tmp_path):
    # YAML 1.1 (PyYAML) read 010 as octal: `--set agent.seed=010` ran seed 8 without a word (YAML 1.2: 10).
    from agent.config import RunConfig, load_config

    path = tmp_path / "run.yaml"
    path.write_text("agent:\n  seed: 0100\n  crf: {iterations: +07}\n")
    config = load_config(RunConfig, [path], ["session.max_interactions=010"])
    assert (config.agent.seed, config.agent.crf.iterations, config.session.max_interactions) == (100, 7, 10)
    assert load_config(RunConfig, [], ["agent.seed=1_000"]).agent.seed == 1000


@pytest.mark.parametrize(("key", "value"), [("agent.seed", "0x10"), ("agent.seed", "0b11"), ("agent.seed", "0o7"),
                                            ("agent.seed", "1:30"), ("session.max_time", "1:30"),
                                            ("session.max_time", "4:00.5"), ("session.max_time", "0x10"),
                                            ("session.max_time", "nan")])
def test_a_number_not_written_in_decimal_is_one_error_naming_the_key_and_the_value(tmp_path, key, value):
    """As JSON writes numbers. YAML 1.1 (PyYAML) read 0x10 as 16, 0b11 as 3 and 1:30 (base 60) as 90, in a file
    and in --set alike: `--set session.max_time=1:30` played 90 s per object; YAML 1.2 and JSON read them otherwise
    or not at all. A field that takes text keeps them as written."""
    from agent.config import RunConfig, load_config

    message = rf"{re.escape(key)}: expected a decimal (integer|number), got the text '{re.escape(value)}'"
    with pytest.raises(ConfigError, match=message):
        load_config(RunConfig, [], [f"{key}={value}"])
    section, field = key.split(".")
    path = tmp_path / "run.yaml"
    path.write_text(f"{section}:\n  {field}: {value}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(RunConfig, [path])
    assert load_config(RunConfig, [], [f"session.user_key={value}"]).session.user_key == value


@pytest.mark.parametrize("value", ["yes", "no", "on", "off", "Yes", "NO", "On", "OFF"])
def test_yaml_11_booleans_are_text_and_only_true_and_false_are_booleans(tmp_path, value):
    """As JSON and YAML 1.2: `--set session.user_key=yes` was refused as "value True of type bool", as YAML 1.1
    reads yes/no/on/off; a bool field given one names the key and what it takes."""
    from agent.config import RunConfig, load_config

    assert load_config(RunConfig, [], [f"session.user_key={value}"]).session.user_key == value
    path = tmp_path / "run.yaml"
    path.write_text(f"session:\n  user_key: {value}\n")
    assert load_config(RunConfig, [path]).session.user_key == value
    message = f"agent.flow.enabled: expected true or false, got the text '{value}'"
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(RunConfig, [], [f"agent.flow.enabled={value}"])
    for text, expected in [("true", True), ("True", True), ("TRUE", True), ("false", False), ("False", False)]:
        assert load_config(RunConfig, [], [f"agent.flow.enabled={text}"]).agent.flow.enabled is expected


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-8-sig"])
def test_a_config_file_saved_as_utf16_with_its_byte_order_mark_is_read(tmp_path, encoding):
    """Windows PowerShell 5's `>` writes UTF-16: it was "not valid JSON or YAML ('utf-8' codec can't decode byte
    0xff")."""
    from agent.config import RunConfig, load_config

    path = tmp_path / "run.yaml"
    text = "session:\n  max_time: 100\n"
    path.write_bytes((codecs.BOM_UTF16_BE if encoding == "utf-16-be" else b"") + text.encode(encoding))
    assert load_config(RunConfig, [path], []).session.max_time == 100


def test_a_runs_config_json_gives_agent_segment_its_agent_section(tmp_path, caplog):
    # session_runner's config.json (agent and session sections) given to agent.segment, agent.app or a study, which
    # read AgentConfig: it was "unknown key(s) agent, session", as if the file were of no use there.
    import logging

    from agent.config import AgentConfig, RunConfig, load_config, to_dict

    run = to_dict(RunConfig())
    run["agent"]["crf"]["iterations"] = 3
    path = tmp_path / "config.json"
    path.write_text(json.dumps(run))
    with caplog.at_level(logging.INFO, logger="agent.config"):
        assert load_config(AgentConfig, [path]).crf.iterations == 3
    assert f"config file {path}: a run's config.json; its 'agent' section is read (session ignored" in caplog.text
    assert load_config(RunConfig, [path]).agent.crf.iterations == 3  # session_runner reads it whole, as before
    run["agent"]["crf"]["use_gpu"] = True
    path.write_text(json.dumps(run))
    with pytest.raises(ConfigError, match=re.escape(f"config file {path} (its agent section): unknown key(s) "
                                                    "crf.use_gpu")):
        load_config(AgentConfig, [path])
    path.write_text(json.dumps({"agent": 3, "session": {}}))
    with pytest.raises(ConfigError, match=f"config file {path}: section 'agent' must be a mapping"):
        load_config(AgentConfig, [path])
    path.write_text(json.dumps({"agent": {}, "session": {}, "train": {}}))  # not a run's: named as before
    with pytest.raises(ConfigError, match="unknown key\\(s\\) agent, session, train"):
        load_config(AgentConfig, [path])


def test_comma_names_refuses_an_empty_name_among_others():
    from agent.config import comma_names

    assert comma_names(None, "--x") is None and comma_names(" ", "--x") == []  # not given; none ('' for none)
    assert comma_names(" dog , goat", "--x") == ["dog", "goat"]
    for text in ("dog,,goat", "dog,", ",dog", "dog, ,goat"):  # each dropped the empty name without a word
        with pytest.raises(ConfigError, match=f"^--x {text!r}: an empty name between commas"):
            comma_names(text, "--x")


@pytest.mark.parametrize(("build", "message"), [
    (lambda c: dataclasses.replace(c.transfer, incremental="no"),
     "transfer.incremental must be True or False, got 'no' (str)"),  # it was true: the pool used, without a word
    (lambda c: dataclasses.replace(c.flow, enabled="false"), "flow.enabled must be True or False, got 'false' (str)"),
    (lambda c: dataclasses.replace(c.transfer, topk=2.5), "transfer.topk must be an integer, got 2.5 (float)"),
    (lambda c: dataclasses.replace(c.crf, iterations=True), "crf.iterations must be an integer, got True (bool)"),
    (lambda c: dataclasses.replace(c, seed=1.5), "agent.seed must be an integer, got 1.5 (float)"),
    (lambda c: dataclasses.replace(c, crf={"iterations": 3}), "agent.crf must be a CRFConfig, got {'iterations': 3}"),
    (lambda c: dataclasses.replace(c, device=None), "agent.device must be text, got None"),  # an AttributeError
], ids=["bool-text", "flow-text", "int-float", "int-bool", "seed-float", "section-dict", "device-none"])
def test_an_agent_config_built_in_python_is_type_checked_as_a_file_is(build, message):
    with pytest.raises(ConfigError) as refused:
        build(AgentConfig())
    assert str(refused.value).startswith(message)


def test_numbers_of_the_right_kind_pass_in_python():
    config = dataclasses.replace(AgentConfig(), seed=np.int64(3), checkpoint="m.pt")  # a path may be text
    assert dataclasses.replace(config.crf, scale=np.float64(0.5), iterations=np.int32(2)).iterations == 2
    assert dataclasses.replace(config.transfer, round_fusion_frames=10).round_fusion_frames == 10  # an int is a number


@pytest.mark.parametrize(("build", "message"), [
    # iterations=2.5 trained for 2.5 steps' schedule; embedding_dim="128" was a TypeError once the model was built
    (lambda: TrainConfig(iterations=2.5), "train.iterations must be an integer, got 2.5 (float)"),
    (lambda: ModelConfig(embedding_dim="128"), "model.embedding_dim must be an integer, got '128' (str)"),
    (lambda: TrainConfig(freeze_backbone_bn="false"), "train.freeze_backbone_bn must be True or False, got 'false'"),
    (lambda: dataclasses.replace(SessionConfig(), skip_bad_sequences="false"),
     "session.skip_bad_sequences must be True or False, got 'false'"),  # it was true: bad videos skipped
    (lambda: SessionConfig(sequences="dog"), "session.sequences must be a tuple (or list) of strings or None, got 'dog'"),
    (lambda: SessionConfig(max_time=True), "session.max_time must be a number, got True (bool)"),
    (lambda: ServerConfig(port="8000"), "server.port must be an integer, got '8000' (str)"),
    (lambda: ModelConfig(input_size=(48, 80.5)), "model.input_size must be a tuple (or list) of 2 integers"),
    (lambda: TrainConfig(output_dir=5), "train.output_dir must be a path (str or Path), got 5 (int)"),
    (lambda: RunConfig(session={"max_time": 60}), "session must be a SessionConfig, got {'max_time': 60}"),
    (lambda: TrainRunConfig(model=None), "model must be a ModelConfig, got None"),
], ids=["train-int-float", "model-int-text", "train-bool-text", "session-bool-text", "session-names-text",
        "session-float-bool", "server-int-text", "model-size-float", "train-path-int", "run-section-dict",
        "trainrun-section-none"])
def test_every_config_built_in_python_is_type_checked_as_a_file_is(build, message):
    with pytest.raises(ConfigError) as refused:
        build()
    assert str(refused.value).startswith(message)


def test_what_the_loaders_pass_still_passes_in_python():
    """numpy numbers (float32 too: it is no float), lists for tuples (to_dict writes them) and paths as text."""
    model = ModelConfig(input_size=[48, 80], embedding_dim=np.int64(8), mean=[0.5, 0.5, np.float32(0.5)],
                        feature_levels=[2, 3])
    assert model.embedding_dim == 8
    train = TrainConfig(iterations=np.int32(5), lr_decoder=np.float32(0.1), output_dir="runs/x", holdout=["dog"],
                        scale_range=(1, 2))
    assert train.iterations == 5
    assert SessionConfig(sequences=["dog"], max_time=np.float32(60), davis_root="~/davis").max_time == 60
    assert ServerConfig(port=np.int64(0), user_keys=("alice",)).port == 0
    assert RunConfig(session=SessionConfig(), agent=AgentConfig()).session.subset == "val"


def test_a_runs_config_json_is_marked_resolved_and_a_field_it_lacks_is_one_warning(tiny_synthetic_root, tmp_path,
                                                                                   caplog):
    """A run's config.json replayed with --config: one written by an older version, without fields added since (no
    agent.flow), was replayed with today's defaults for them without a word. The run marks its config.json as its
    whole resolved config; a file so marked that lacks fields names them in one warning. A file without the marker
    (written by hand, or by a run before the marker) leaves fields out silently, as before."""
    import logging

    from agent.config import RunConfig, load_config

    out = tmp_path / "run"
    assert session_runner.main(["--davis-root", str(tiny_synthetic_root), "--predictor", "baseline", "--output-dir",
                                str(out), "--sequences", "synth-000", "--max-interactions", "1"]) == 0
    path = out / "config.json"
    written = json.loads(path.read_text())
    assert written["resolved"] is True
    with caplog.at_level(logging.WARNING, logger="agent.config"):
        replayed = load_config(RunConfig, [path])  # the whole run: silent
        assert replayed.session.output_dir == out and replayed.session.max_interactions == 1
        assert not caplog.records
        older = {**written, "agent": {key: value for key, value in written["agent"].items() if key != "flow"}}
        older["agent"]["crf"] = {key: value for key, value in older["agent"]["crf"].items() if key != "iterations"}
        path.write_text(json.dumps(older))
        assert load_config(RunConfig, [path]).agent.flow.enabled  # still loadable, with today's defaults
        assert [record.getMessage() for record in caplog.records] == [
            f"config file {path} is a run's resolved config without agent.crf.iterations, agent.flow (the whole "
            "section) (written by an older version?): today's defaults fill them, so this is not exactly the run "
            "that wrote it"]
        caplog.clear()
        del older["resolved"]  # a hand-written partial file (or a run's from before the marker): silent, as before
        path.write_text(json.dumps(older))
        assert load_config(RunConfig, [path]).agent.crf.iterations == RunConfig().agent.crf.iterations
        assert not caplog.records
    path.write_text(json.dumps({**older, "resolved": "yes"}))
    with pytest.raises(ConfigError, match="'resolved' must be true or false"):
        load_config(RunConfig, [path])
