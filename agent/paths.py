"""File-system checks and names shared by the commands (sessions, tools, training, benchmarks)."""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np

from .errors import repeated

try:
    import fcntl
except ImportError:  # not POSIX: no lock
    fcntl = None


def expand_user(path: str | Path) -> Path:
    """`path` with `~` or `~user` expanded; ValueError (one line) for a user this machine does not know (pathlib
    raises RuntimeError, "Could not determine home directory.", a traceback in every command)."""
    try:
        return Path(path).expanduser()
    except RuntimeError as error:
        raise ValueError(f"{path}: {error} (no such user?)") from None


def cache_dir() -> Path:
    """The cache folder of the built-in dataset and the training features: $SIMLEARN_CACHE, else
    ~/.cache/simlearn-ivos, `~` expanded in either (a quoted `SIMLEARN_CACHE=~/x`, as a service or container
    sets it, put the features in a folder named `~` in the working directory). ValueError (one line) when `~` has
    no home folder to stand for: HOME unset for a user the system does not know (a container's `--user 1234`) was
    pathlib's RuntimeError, a traceback."""
    configured = os.environ.get("SIMLEARN_CACHE")
    try:
        return expand_user(configured or "~/.cache/simlearn-ivos")
    except ValueError:
        why = (f"{configured} names a home folder this system does not know" if configured else
               "not set, and ~/.cache/simlearn-ivos has no home folder (HOME is not set and this user has none)")
        raise ValueError(f"$SIMLEARN_CACHE: {why}: set SIMLEARN_CACHE to a writable folder") from None


def path_arg(text: str) -> Path:
    """argparse type of a path option: the path, `~` as the home folder (`--output=~/x`, which no shell expands,
    made a folder named `~`); an empty one (`--output "$UNSET"`) is refused: Path("") is the working directory,
    which the command read, wrote in or refused under the name `.`."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (an unset variable?): name a file or folder")
    try:
        return expand_user(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def root_or_home(path: Path) -> str | None:
    """"the file system's root" or "your home folder" when `path` is that folder itself (an output there mixes its
    files with everything else, and replacing it deletes them), else None."""
    resolved = Path(os.path.abspath(path)).resolve()
    if resolved == Path(resolved.anchor):
        return "the file system's root"
    with suppress(RuntimeError, KeyError, OSError):  # no home folder known: none to protect
        if resolved == Path.home().resolve():
            return "your home folder"
    return None


def is_hidden(path: Path) -> bool:
    """Whether `path`'s name starts with `.`, which file managers and the shell's globs hide (pathlib's glob does
    not): macOS writes a `._name` AppleDouble file, no image or JSON, beside each file it copies to a USB drive or
    network share."""
    return path.name.startswith(".")


def file_in_the_way(path: Path) -> Path | None:
    """`path` or the nearest of its parents that exists and is not a directory (an output could not be made
    there), else None."""
    for candidate in (path, *path.parents):
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return None


def unwritable_folder(path: Path) -> Path | None:
    """The folder that would hold `path` (`path` itself if a folder, else its nearest existing parent) when this
    user may not create files in it; None when it may, or when there is no such folder (file_in_the_way says
    why). Checked before any work: the write itself comes after minutes of it."""
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            return None if os.access(candidate, os.W_OK | os.X_OK) and _creates_files(candidate) else candidate
        if candidate.exists():
            return None
    return None


def _creates_files(folder: Path) -> bool:
    """False when making a file in `folder` is refused: os.access says yes to root everywhere, and /sys (or a
    read-only mount) refuses the file itself; the output was found unwritable once the work was done."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:  # a full disk or the like is the write's to report, not "no permission"
        return error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS)
    return True


def special_file(path: Path) -> str | None:
    """What `path` is when it exists but is neither a regular file nor a folder, e.g. "a FIFO (named pipe)"
    (opening one waits for a writer forever) or "a character device" (/dev/zero never ends); None otherwise
    (links are followed)."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):  # missing, a loop of links, a name too long: the caller's other checks say so
        return None
    for test, what in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return None


def broken_link(path: Path) -> str | None:
    """What `path` is when it is a symbolic link that leads to nothing: "a link to a missing file (TARGET)" or
    "a loop of links"; None otherwise. `Path.is_file()` is False for both, so a folder listing that keeps only
    files would leave such an entry out without a word."""
    if not path.is_symlink():
        return None
    try:
        path.stat()
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a loop of symbolic links"
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return f"a symbolic link to a missing file ({target})"
    return None


def odd_entry(path: Path) -> str | None:
    """What a folder entry is when a listing that keeps regular files would drop it without a word: a FIFO,
    device or socket (special_file) or a link that leads to nothing (broken_link); None otherwise."""
    return special_file(path) or broken_link(path)


def not_a_file(path: Path) -> str | None:
    """What `path` is when it is not a regular file one can read ("does not exist", "is a directory", "is a FIFO
    (named pipe)", ...), for an error line that names it; None for a regular file."""
    if path.is_file():
        return None
    special = special_file(path)
    return f"is {special}, not a file" if special else "is a directory, not a file" if path.is_dir() \
        else "does not exist"


def output_file_problem(path: Path, what: str) -> str | None:
    """Why `path` cannot be the output file that `what` describes (e.g. "--output is the CSV file to write"),
    as one `<path>: <why>` line; None when it can be written. An existing regular file is no problem here: the
    caller decides whether it may be replaced. Checked before any work, by every command that writes one file."""
    if path.is_dir():
        return f"{path}: is a directory, {what}"
    special = special_file(path)
    if special:  # writing would replace it with a regular file: /dev/null itself, as root
        return f"{path}: is {special}, {what}"
    blocker = file_in_the_way(path.parent)
    if blocker is not None:
        return f"{blocker}: is a file, {path} cannot be written below it"
    folder = unwritable_folder(path.parent)
    if folder is not None:
        return f"{path}: cannot write it (no permission to write in {folder})"
    return None


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """The block's OSError names `path` when it names no file: a write or flush the disk refuses (full, a file-size
    limit) says only "No space left on device", and the commands' line was "error: a path: ..."."""
    try:
        yield
    except OSError as error:
        if error.filename is not None:
            raise
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error


def unused_path(path: Path, keep_suffix: bool = True) -> Path:
    """`path`, or the first of `stem-2.ext`, `stem-3.ext`, ... that does not exist (keep_suffix False:
    `name-2`, `name-3`, ..., for names whose dots are not a suffix)."""
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        name = f"{path.stem}-{number}{path.suffix}" if keep_suffix else f"{path.name}-{number}"
        candidate = path.with_name(name)
    return candidate


def lock_folder(folder: Path, wait: bool = False) -> int | None:
    """An open descriptor of `folder` holding an exclusive flock on it, for a run writing there; BlockingIOError
    when another process holds it (wait: wait for it instead). The lock goes when the process does, however it
    ends: no stale lock to clear. None where the file system has no flock (the run goes on unguarded)."""
    if fcntl is None:
        return None
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException as error:  # no lock (ENOLCK), held, or Ctrl-C while waiting: the descriptor is closed
        os.close(fd)
        if not isinstance(error, OSError):
            raise
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise BlockingIOError(error.errno, f"{folder} is locked by another process") from error
        return None
    return fd


@contextmanager
def folder_held(folder: Path) -> Iterator[None]:
    """An exclusive flock on `folder` for the block, waiting while another process holds it (its own block: an
    export's final moves, milliseconds). Unguarded where none can be taken (no flock, the folder gone: the caller's
    own checks say so)."""
    fd = None
    with suppress(OSError):
        fd = lock_folder(folder, wait=True)
    try:
        yield
    finally:
        unlock_folder(fd)


def unlock_folder(fd: int | None) -> None:
    """Release lock_folder's lock (None, or released already: nothing)."""
    if fd is None:
        return
    try:
        with suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)  # explicitly: forked workers share the descriptor
    finally:
        with suppress(OSError):  # closed even where the unlock failed (no flock there)
            os.close(fd)


def _refuse_repeated_keys(pairs: list[tuple[str, object]]) -> dict:
    twice = sorted(repeated(key for key, _ in pairs))
    if twice:  # json keeps the last silently: a stroke's "object_id" given twice took the second without a word
        raise ValueError(f"key(s) {', '.join(repr(k) for k in twice)} given twice in one object")
    return dict(pairs)


def read_json(path: Path) -> object:
    """The JSON in `path` (UTF-8, with or without the byte-order mark Windows editors write). Malformed text, a
    key given twice in one object, or nesting too deep to parse (json raises RecursionError there) raises
    ValueError with a one-line reason; a file that cannot be read raises OSError."""
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=_refuse_repeated_keys)
    except RecursionError as error:
        raise ValueError("nested too deeply to parse") from error


def first_non_finite(value, where: str = "") -> tuple[str, float] | None:
    """The place (`where[key][index]...`) and value of the first NaN or infinite number in a parsed JSON value, in
    document order, else None: Python's reader takes NaN, Infinity and 1e999, which JSON has not (strict readers
    refuse a file holding them). Walked without recursion: a value may be nested nearly as deep as the reader allows."""
    pending = [(where, value)]
    while pending:
        place, item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return place, item
        children = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ()
        pending.extend(reversed([(f"{place}[{key!r}]", child) for key, child in children]))
    return None


def json_ready(value):
    """`value` with numpy scalars and arrays as plain Python, paths as text and keys as strings, for json.dumps
    (summaries, reports, the local server's answers)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
