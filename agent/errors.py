"""One-line error messages: every command, the app and the servers report a fault in one line."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Hashable, Iterable
from typing import NoReturn


def counted(number: int, noun: str) -> str:
    """'1 frame', '2 frames': a count in a user-facing line ("masks for 1 frames" was printed for one image)."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def first_line(error: BaseException) -> str:
    """An exception's first message line (its type name when it has no message), for one-line errors."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def typed_line(error: BaseException) -> str:
    """`Type: first message line`, or the type name alone when there is no message: what failed and why."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


MAX_QUOTED_CHARS = 500  # of a foreign text (a server's message) quoted in an error: one readable line, whatever it is


def one_line(text: object) -> str:
    """`text` (a server's message, a URL it names) as one printable line of at most MAX_QUOTED_CHARS (and "..."),
    to quote in an error: its words reach the terminal, so control characters (ANSI escapes, BEL, bidi overrides)
    are escaped."""
    text = " ".join(str(text).split())
    text = text if len(text) <= MAX_QUOTED_CHARS else text[:MAX_QUOTED_CHARS] + "..."
    return "".join(character if character.isprintable() else repr(character)[1:-1] for character in text)


def os_error_line(error: OSError) -> str:
    """`<path>: <why>` for an OSError a path caused (a name too long for the file system, a full disk)."""
    return f"{error.filename or 'a path'}: {error.strerror or first_line(error)}"


def validation_problems(problems) -> str:
    """FastAPI's RequestValidationError.errors() (dicts with 'loc' and 'msg') as one line: `loc: msg; ...`."""
    return "; ".join(f"{'.'.join(map(str, p.get('loc', ())))}: {p.get('msg')}" for p in problems)


def ascii_digits(text: str) -> bool:
    """Whether `text` is one or more ASCII digits 0-9, as a number in a file name or header must be: str.isdigit()
    also holds for other scripts' digits, which int() reads (a frame `٠٠٠٠١.jpg` passed as 00001.jpg), and for
    `²`, which int() refuses (a ValueError traceback)."""
    return text.isascii() and text.isdigit()


def ascii_int(text: object) -> int:
    """int(text) of ASCII digits only: int() and str.isdigit() also take other scripts' digits, so `--shard ١/٢`
    or a fullwidth `１/２` passed as 1/2."""
    if not str(text).isascii():
        raise ValueError(f"not a decimal integer in ASCII digits: {text!r}")
    return int(text)


def ascii_float(text: object) -> float:
    """float(text) of ASCII characters only, as ascii_int (`--max-time ３０` was 30 s)."""
    if not str(text).isascii():
        raise ValueError(f"not a decimal number in ASCII digits: {text!r}")
    return float(text)


def repeated(values: Iterable[Hashable]) -> list:
    """The values given more than once, in the order of their first occurrence, for an error that names them
    (counted at once: list.count per value took minutes for 80,000 YAML keys)."""
    return [value for value, count in Counter(values).items() if count > 1]


class CommandParser(argparse.ArgumentParser):
    """The commands' argument parser: argparse's own errors (a bad value, an unknown flag, a missing argument, an
    invalid choice) are one `error: <what> (see --help)` line, exit code 2, as every other error of the commands;
    argparse printed its whole usage text above `prog: error: ...`. --help is argparse's own. Sub-commands'
    parsers (add_subparsers) are of this class too. `type=int` and `type=float` take ASCII digits only (ascii_int).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register("type", int, ascii_int)  # argparse looks a type up here first; its error still says "int"
        self.register("type", float, ascii_float)

    def error(self, message: str) -> NoReturn:
        # one_line: an unknown argument is quoted as typed, and may hold a line break or an escape sequence.
        self.exit(2, f"error: {one_line(message)} (see --help)\n")
