"""Where a run's results go, so that finished results are never lost or silently overwritten.

- An existing non-empty output directory is refused unless the user passes --overwrite.
- With --overwrite the run writes into a fresh sibling directory, which replaces the old one only when
  the run completes: a run that fails or is interrupted leaves the earlier results as they were.
- Every result file is written to a temporary name and renamed (os.replace is atomic on POSIX), so a
  reader, or a crash in the middle of writing, never sees half a file.
- A run holds a lock on its output directory until it publishes or discards it: a second run given the same
  directory while the first runs (two started at once, each finding it empty) is refused.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..paths import lock_folder, root_or_home, special_file, unlock_folder, unused_path

log = logging.getLogger(__name__)


class OutputDirError(ValueError):
    """An output directory that cannot be used; the message names it and says what to do."""


class PublishError(OSError):
    """A completed run that could not be moved into place (a full disk, its folder removed or made read-only
    meanwhile); the message names the folder and where the finished results lie (they stay there)."""


@dataclass(frozen=True)
class OutputTarget:
    final: Path  # where the results belong
    work: Path  # where this run writes them: `final`, or a sibling that replaces it on completion
    created: bool = False  # `work` was made by prepare_output_dir (discard() removes it while empty)
    lock: int | None = None  # a descriptor of `final` holding its flock (see _lock), released by publish/discard

    @property
    def staged(self) -> bool:
        return self.work != self.final


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except FileExistsError as error:
        raise OutputDirError(f"{folder}: is a file, not a directory (pass another --output-dir)") from error
    except OSError as error:
        raise OutputDirError(f"{folder}: cannot write there ({error.strerror or error}); pass another "
                             "--output-dir") from error


def _lock(folder: Path) -> int | None:
    """paths.lock_folder: OutputDirError when another run holds it. Two runs started together with one new
    --output-dir each found it empty: they wrote into one folder, the later's files over the first's finished
    results (and the framework's report of one was deleted by the other, a traceback)."""
    try:
        return lock_folder(folder)
    except BlockingIOError as error:
        raise OutputDirError(f"{folder}: another run is writing there (started at the same time?): pass "
                             "another --output-dir, or wait for it to end") from error


def replaced_input(path: Path, inputs: tuple[Path, ...]) -> Path | None:
    """The first of `inputs` that replacing `path` would replace: `path` is it, holds it or lies inside it."""
    resolved = Path(path).resolve()
    for source in inputs:
        source_resolved = Path(source).expanduser().resolve()
        if resolved == source_resolved or resolved in source_resolved.parents or source_resolved in resolved.parents:
            return source
    return None


def prepare_output_dir(path: str | Path, overwrite: bool = False, inputs: tuple[Path, ...] = (),
                       generated: bool = False) -> OutputTarget:
    """Check `path` is a writable directory (created if needed) and not holding results, or plan to replace
    it (overwrite=True) once the run completes; never when that would replace one of `inputs` (the dataset,
    the checkpoint) or a folder holding or inside one. Raises OutputDirError with one line.

    `generated`: `path` is a default name (unused_dir), not the user's: it or the first free `path-2`, ... is
    made here, and the target names the one made."""
    final = Path(path)
    if generated:
        return _make_unused(final)
    if final.is_symlink() and not final.exists():
        raise OutputDirError(f"{final}: is a link that leads nowhere (a loop?): pass another --output-dir")
    if final.exists() and not final.is_dir():
        raise OutputDirError(f"{final}: is a file, not a directory (pass another --output-dir)")
    if final.is_dir() and any(final.iterdir()):
        if not overwrite:
            raise OutputDirError(f"{final}: exists and is not empty (an earlier run's results?): pass --overwrite "
                                 "to replace it when this run completes, or another --output-dir")
        source = replaced_input(final, inputs)
        if source is not None:
            raise OutputDirError(f"{final}: --overwrite would replace the run's input {source} (the output "
                                 "directory is it, holds it or lies inside it): pass another --output-dir")
        where = root_or_home(final)
        if where is not None:  # `--output-dir ~` run from elsewhere: the home folder was replaced by the results
            raise OutputDirError(f"{final}: is {where}, which --overwrite would replace with this run's results: pass "
                                 "another --output-dir")
        here = Path.cwd().resolve()
        if final.resolve() == here or final.resolve() in here.parents:  # `.` or `..`: a slip, not a results folder
            raise OutputDirError(f"{final}: --overwrite would replace the folder you are working in (or one holding "
                                 "it): pass another --output-dir")
        # A mount point (a container's volume, `-v ~/results:/results`) cannot be renamed: the whole run was played,
        # then publishing it was an OSError traceback ("Device or resource busy"), its results in a sibling folder.
        if os.path.ismount(final):
            raise OutputDirError(f"{final}: is a mount point, which --overwrite cannot replace (a run's results "
                                 "replace the folder once it completes): pass a folder inside it as --output-dir")
        # Named by its absolute path: `.` (or `runs/a/..`) has no name to stage beside and replace, a ValueError
        # traceback once the run had completed, its results left in a hidden `.new-` folder inside it.
        final = Path(os.path.abspath(final))
        _check_writable(final.parent)
        lock = _lock(final)  # another --overwrite run would publish over this one's, or fail halfway through
        work = Path(tempfile.mkdtemp(prefix=f"{final.name}.new-", dir=final.parent))
        os.chmod(work, 0o777 & ~_umask())
        log.info("writing to %s; it replaces %s when the run completes", work, final)
        return OutputTarget(final, work, created=True, lock=lock)
    existed = final.is_dir()
    _check_writable(final)
    lock = _lock(final)
    if any(final.iterdir()):  # a run that held it finished between the check above and the lock
        unlock_folder(lock)
        raise OutputDirError(f"{final}: another run wrote its results there just now: pass another --output-dir")
    return OutputTarget(final, final, created=not existed, lock=lock)


def _make_unused(path: Path) -> OutputTarget:
    """A new folder `path`, `path-2`, ... made without exist_ok: two runs started in the same second both found
    the default name free, and the later was refused as "another run is writing there"."""
    _check_writable(path.parent)
    while True:
        final = unused_dir(path)
        try:
            final.mkdir()
        except FileExistsError:  # another run made it since unused_dir looked
            continue
        return OutputTarget(final, final, created=True, lock=_lock(final))


def _holds_no_file(folder: Path) -> bool:
    return all(entry.is_dir() and not entry.is_symlink() for entry in folder.rglob("*"))


def discard(target: OutputTarget) -> None:
    """Remove the directory prepare_output_dir made (or empty the empty one it was given), if nothing was
    written to it (a run that failed before it began leaves no trace). Empty folders are nothing: the framework's session makes its report
    folder when it opens, so a server that refused the session left `framework/`, which refused the next run.
    Releases the directory's lock either way."""
    unlock_folder(target.lock)
    if not (target.work.is_dir() and _holds_no_file(target.work)):
        return
    if target.created:
        shutil.rmtree(target.work)
    else:  # the user's own folder, empty when the run began (else it was refused or staged): empty again
        for child in target.work.iterdir():
            shutil.rmtree(child)


def unused_dir(path: Path) -> Path:
    """`path`, or `path-2`, `path-3`, ... when it exists (for generated default names)."""
    return unused_path(path, keep_suffix=False)


def publish(target: OutputTarget) -> Path:
    """Move a completed staged run into place (the old results go only after the new ones are there), and
    release the directory's lock. PublishError when the file system refuses the move: it was an OSError
    traceback that did not say where the finished results were."""
    try:
        return _publish(target)
    finally:
        unlock_folder(target.lock)


def _publish(target: OutputTarget) -> Path:
    if not target.staged:
        return target.final
    old = target.final.with_name(f"{target.final.name}.old-{os.getpid()}-{int(time.time())}")
    try:
        os.replace(target.final, old)
    except OSError as error:
        raise _not_published(target, error) from error
    try:
        os.replace(target.work, target.final)
    except OSError as error:
        try:
            os.replace(old, target.final)  # put the earlier results back
        except OSError:
            raise _not_published(target, error, f"the earlier results are in {old}") from error
        raise _not_published(target, error) from error
    shutil.rmtree(old, ignore_errors=True)
    log.info("replaced %s with this run's results", target.final)
    return target.final


def _not_published(target: OutputTarget, error: OSError, earlier: str = "") -> PublishError:
    return PublishError(f"{target.final}: cannot put this run's results there ({error.strerror or error}); the "
                        f"finished results are in {target.work} ({earlier or f'{target.final} is as it was'})")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed to `path` when the block succeeds, removed if not."""
    path = Path(path)
    special = special_file(path)
    if special:  # os.replace would put a file in its place: /dev/null itself, as root
        raise OSError(errno.EINVAL, f"is {special}, not a file results can replace", str(path))
    try:
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    except OSError as error:  # it named the hidden temporary file, a name the user never gave
        raise OSError(error.errno, error.strerror, str(path)) from error
    os.close(handle)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make results private to the user
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
