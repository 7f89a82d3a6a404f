"""File-system checks shared by the commands (agent/paths.py)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

from agent.paths import (
    broken_link,
    first_non_finite,
    json_ready,
    not_a_file,
    odd_entry,
    output_file_problem,
    read_json,
    root_or_home,
)
from tests.conftest import run_command


def test_output_file_problem_names_what_stands_in_the_way(tmp_path):
    (tmp_path / "file").write_text("x")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    what = "--output is the CSV file to write"
    assert output_file_problem(tmp_path / "new" / "out.csv", what) is None  # folders are made later
    assert output_file_problem(tmp_path / "file", what) is None  # an existing file: the caller decides
    assert output_file_problem(tmp_path, what) == f"{tmp_path}: is a directory, {what}"
    assert output_file_problem(fifo, what) == f"{fifo}: is a FIFO (named pipe), {what}"
    assert output_file_problem(tmp_path / "file" / "out.csv", what) == \
        f"{tmp_path / 'file'}: is a file, {tmp_path / 'file' / 'out.csv'} cannot be written below it"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_output_file_problem_names_a_folder_it_may_not_write(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert "no permission to write in" in output_file_problem(locked / "out.csv", "the file")


def test_output_file_problem_tries_a_file_where_os_access_says_yes(tmp_path, monkeypatch):
    """os.access says yes to root everywhere: /sys refused the file itself, found once the study's work was done
    (a sweep's or the fine-tuning study's CSV, agent.report's plot), naming a hidden temporary file."""
    from types import SimpleNamespace

    from agent import paths

    def refusing(number, why):
        def temporary_file(dir=None):
            raise OSError(number, why, str(Path(dir) / "tmpq1w2e3"))
        return SimpleNamespace(TemporaryFile=temporary_file)

    monkeypatch.setattr(paths, "tempfile", refusing(errno.EPERM, "Operation not permitted"))
    assert output_file_problem(tmp_path / "new" / "out.csv", "the file") == \
        f"{tmp_path / 'new' / 'out.csv'}: cannot write it (no permission to write in {tmp_path})"
    monkeypatch.setattr(paths, "tempfile", refusing(errno.ENOSPC, "No space left on device"))
    assert output_file_problem(tmp_path / "out.csv", "the file") is None  # not "no permission": the write says


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/sys/fs").is_dir(), reason="root on Linux: /sys refuses files")
def test_output_file_problem_names_sys_for_root():
    assert output_file_problem(Path("/sys/fs/out.csv"), "the file") == \
        "/sys/fs/out.csv: cannot write it (no permission to write in /sys/fs)"


def test_not_a_file_says_what_the_path_is(tmp_path):
    (tmp_path / "file").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    assert not_a_file(tmp_path / "file") is None
    assert not_a_file(tmp_path / "fifo") == "is a FIFO (named pipe), not a file"
    assert not_a_file(tmp_path) == "is a directory, not a file"
    assert not_a_file(tmp_path / "absent") == "does not exist"


def test_broken_link_says_where_a_link_leads_nowhere(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "good").symlink_to("file")
    (tmp_path / "dangling").symlink_to("gone.jpg")
    (tmp_path / "loop").symlink_to("loop")
    assert broken_link(tmp_path / "file") is None and broken_link(tmp_path / "good") is None
    assert broken_link(tmp_path / "absent") is None  # not a link: the caller's "does not exist"
    assert broken_link(tmp_path / "dangling") == "a symbolic link to a missing file (gone.jpg)"
    assert broken_link(tmp_path / "loop") == "a loop of symbolic links"


def test_odd_entry_names_what_a_listing_of_files_would_drop(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to("gone.jpg")
    os.mkfifo(tmp_path / "pipe")
    assert odd_entry(tmp_path / "file") is None
    assert odd_entry(tmp_path / "dangling") == "a symbolic link to a missing file (gone.jpg)"
    assert odd_entry(tmp_path / "pipe") == "a FIFO (named pipe)"


def test_read_json_takes_a_byte_order_mark_and_refuses_a_key_given_twice(tmp_path):
    path = tmp_path / "scribbles.json"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"scribbles": [[{"path": [[0.5, 0.5]], "object_id": 1}]]}')
    assert read_json(path)["scribbles"][0][0]["object_id"] == 1  # as Notepad saves it
    path.write_text('{"scribbles": [[{"path": [[0.5, 0.5]], "object_id": 1, "object_id": 0}]]}')
    with pytest.raises(ValueError, match="'object_id' given twice"):
        read_json(path)


def test_json_ready_makes_numpy_values_and_paths_plain():
    value = {1: np.float32(0.5), "a": (np.arange(2), Path("x/y")), "b": [np.int64(3), {"c": np.bool_(True)}]}
    assert json.loads(json.dumps(json_ready(value))) == {"1": 0.5, "a": [[0, 1], "x/y"], "b": [3, {"c": True}]}


@pytest.mark.parametrize("argv", [
    ["-m", "agent.data.robot_root", "--davis-root", "src", "--output", ""],
    ["-m", "agent.data.twin_root", "--davis-root", "", "--output", "out"],
    ["-m", "agent.bench", "--output", " "],
    ["crf_study.py", "capture", "--davis-root", "src", "--output-dir", ""],
    ["crf_study.py", "sweep", "", "--davis-root", "src"],
    ["finetune_study.py", "--davis-root", "src", "--checkpoint", ""],
    ["-m", "agent.segment", "clip.mp4", "--scribbles", "s", "--output", ""],
    ["-m", "agent.app", ""],
    ["-m", "agent.train", "--output-dir", ""],
    ["-m", "agent.report", "merge", "run1", "--output", ""],
    ["-m", "agent.server", "--davis-root", ""],
    ["-m", "agent.model.checkpoint", "a.pt", ""],
])
@pytest.mark.filterwarnings(r"ignore:'agent\.[a-z_.]+' found in sys.modules:RuntimeWarning")  # runpy of an imported module
def test_an_empty_path_option_is_refused_not_the_working_directory(argv, tmp_path: Path, monkeypatch, capsys):
    # `--output "$UNSET"` was Path("") == `.`: robot_root wrote its root into an empty working directory.
    monkeypatch.chdir(tmp_path)
    assert run_command(argv, monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument ") and err.count("\n") == 1, err  # one line, as the other errors
    assert "an empty path (an unset variable?)" in err
    assert not any(tmp_path.iterdir())


def test_path_arg_expands_the_home_folder(monkeypatch, tmp_path: Path):
    from agent.paths import path_arg

    monkeypatch.setenv("HOME", str(tmp_path))
    assert path_arg("~/runs/a") == tmp_path / "runs" / "a"  # `--output=~/runs/a`: no shell expands it


@pytest.mark.skipif(os.name != "posix" or not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd")
def test_folder_held_closes_its_descriptor_where_no_lock_can_be_taken(tmp_path: Path, monkeypatch):
    # A file system without flock (ENOLCK): the block runs unguarded, and the folder's descriptor was left open,
    # one per export, as unlock_folder's LOCK_UN failed before it closed it.
    import fcntl

    from agent.paths import folder_held

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    before = len(os.listdir("/proc/self/fd"))
    ran = 0
    for _ in range(3):
        with folder_held(tmp_path):
            ran += 1
    assert ran == 3
    assert len(os.listdir("/proc/self/fd")) == before


def test_first_non_finite_names_the_first_in_document_order_and_walks_deep_values():
    value = json.loads('{"a": [1, {"b": NaN}], "c": Infinity}')
    assert first_non_finite(value, "x") == ("x['a'][1]['b']", value["a"][1]["b"])
    assert first_non_finite({"a": [1.5, "NaN", None, True]}) is None
    deep = float("-inf")
    for _ in range(5000):  # past Python's recursion limit
        deep = [deep]
    assert first_non_finite(deep) == ("[0]" * 5000, float("-inf"))


def test_root_or_home_names_the_file_systems_root_and_the_home_folder_only(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "clips").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    assert root_or_home(Path("/")) == root_or_home(Path(str(tmp_path) + "/.." * len(tmp_path.parts))) == \
        "the file system's root"
    assert root_or_home(home) == root_or_home(home / "clips" / "..") == "your home folder"
    (tmp_path / "link").symlink_to(home)
    assert root_or_home(tmp_path / "link") == "your home folder"
    assert root_or_home(home / "clips") is None and root_or_home(tmp_path) is None
    monkeypatch.delenv("HOME")
    monkeypatch.setattr(Path, "home", lambda: (_ for _ in ()).throw(RuntimeError("no home")))
    assert root_or_home(home) is None and root_or_home(Path("/")) == "the file system's root"
