"""The framework's HTTP client made safe: davisinteractive's ``RemoteConnector`` patched at run time.

davisinteractive 1.0.4's ``RemoteConnector._handle_response`` runs ``eval()`` on the error name a server
sends back, so a hostile or spoofed server could run code on the evaluating machine; its requests have no
timeout, so a server that stops answering hangs the session for ever. :func:`install` (called by
``agent.data.compat.apply``) replaces

* ``_handle_response`` by :func:`handle_response`: a server error name is looked up in a fixed table of the
  error classes the framework's evaluation raises (:data:`SERVER_ERRORS`); any other name, a 4xx/5xx
  answer or a body that is not JSON is one :class:`RemoteServerError` quoting the server's message;
* ``_requests_retry_session`` by one whose requests all have connection and read timeouts, whose answers
  are read whole within the read timeout and MAX_ANSWER_BYTES, and whose network failures are one
  :class:`ServerUnavailableError` naming the request;
* ``get_scribble``, ``post_predicted_masks`` and ``get_report`` by the framework's own, whose answers are then
  checked: an answer the framework would index blindly (samples that are not ``[sequence, index]`` pairs,
  scribbles of another sequence, a report without its columns or of rounds this session never sent) is one
  :class:`RemoteServerError` naming the request, not a TypeError or KeyError deep in the framework or the session.

The connector itself (its URLs, encoding, headers) stays the framework's; none of its code is copied here.
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
import time
import urllib.parse
from dataclasses import dataclass

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError
from urllib3.util.retry import Retry

from ..errors import one_line
from ..paths import first_non_finite

log = logging.getLogger(__name__)

MAX_TIME, MAX_INTERACTIONS = 600, 16  # what the framework's session caps a client's own settings at
MAX_ANSWER_BYTES = 256 * 2**20  # of one answer: DAVIS's largest report (16 rounds of test-dev) is about 60 MB
MAX_NAME_BYTES = 255  # of a sequence name: a folder's (JPEGImages/480p/<name>), NAME_MAX on Linux and macOS


class RemoteServerError(Exception):
    """An evaluation server answered with an error, or something that is not the protocol."""


class ServerUnavailableError(RemoteServerError):
    """The evaluation server could not be reached, or did not answer in time."""


# What the framework's own evaluation raises (EvaluationService, its storage and dataset): a server error
# of one of these names is raised as that class (and as a RemoteServerError), every other name is refused.
class ServerValueError(RemoteServerError, ValueError):
    pass


class ServerTypeError(RemoteServerError, TypeError):
    pass


class ServerRuntimeError(RemoteServerError, RuntimeError):
    pass


class ServerNotImplementedError(RemoteServerError, NotImplementedError):
    pass


SERVER_ERRORS: dict[str, type[RemoteServerError]] = {
    "ValueError": ServerValueError,
    "TypeError": ServerTypeError,
    "RuntimeError": ServerRuntimeError,
    "NotImplementedError": ServerNotImplementedError,
}


@dataclass
class RemoteSettings:
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    retries: int = 3
    backoff: float = 1.0  # seconds, doubled per retry (urllib3's backoff_factor)


settings = RemoteSettings()
_framework_handle_response = None
_framework_methods: dict[str, object] = {}  # the connector methods wrapped below, as the framework has them


def configure(connect_timeout: float, read_timeout: float, retries: int) -> None:
    """Timeouts and retries of every request the framework's RemoteConnector makes from now on."""
    settings.connect_timeout = connect_timeout
    settings.read_timeout = read_timeout
    settings.retries = retries


def _short_reason(error: requests.RequestException) -> str:
    # After retries urllib3's reason is wrapped (MaxRetryError), and requests reports a read timeout as a
    # ConnectionError: look at the reason itself.
    reason = getattr(error.args[0], "reason", None) if error.args else None
    refused = isinstance(reason, NewConnectionError)  # a subclass of ConnectTimeoutError in urllib3 2
    if not refused and (isinstance(error, requests.ConnectTimeout) or isinstance(reason, ConnectTimeoutError)):
        return f"no connection within {settings.connect_timeout:g} s"
    if isinstance(error, requests.Timeout) or isinstance(reason, ReadTimeoutError):
        return f"no answer within {settings.read_timeout:g} s"
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(error))
    if match:
        return match.group(1).strip()
    # The innermost cause's words ("Remote end closed connection without response": a server that went away
    # mid-request), or requests' own ("Exceeded 30 redirects."): the class name alone said nothing.
    inner = reason if reason is not None else (error.args[0] if error.args else None)
    while isinstance(inner, Exception) and inner.args and isinstance(inner.args[-1], Exception):
        inner = inner.args[-1]
    text = one_line(inner if isinstance(inner, Exception | str) else "")[:200]
    return text or type(error).__name__


class _GuardedSession(requests.Session):
    """A requests session with timeouts on every request and one clear error when the server is gone."""

    def request(self, method, url, *args, **kwargs):
        kwargs.setdefault("timeout", (settings.connect_timeout, settings.read_timeout))
        kwargs["stream"] = True  # the body is read below, bounded
        try:
            response = super().request(method, url, *args, **kwargs)
            response._content = _bounded_body(response, f"{method} {url}")
            return response
        except requests.RequestException as error:
            raise ServerUnavailableError(
                f"evaluation server unavailable: {method} {url}: {_short_reason(error)}") from error

    def rebuild_auth(self, prepared_request, response):
        # requests drops only Authorization on a redirect to another host: the framework's User-Key went along.
        if self.should_strip_auth(response.request.url, prepared_request.url):
            prepared_request.headers.pop("User-Key", None)
        super().rebuild_auth(prepared_request, response)


def _bounded_body(response: requests.Response, request: str) -> bytes:
    """The whole body of `response`, read within read_timeout and MAX_ANSWER_BYTES: the read timeout holds for
    each read only, so a server sending a byte now and then held the session for ever, and an endless body
    filled the memory (the process killed, the finished samples' summary never written)."""
    deadline = time.monotonic() + settings.read_timeout
    raw = response.raw
    # read1: what one read of the socket gives (read(n) waits for all n bytes, a byte per read timeout).
    read = raw.read1 if hasattr(raw, "read1") else lambda amt, **kw: raw.read(min(amt, 2**10), **kw)
    chunks, size = [], 0
    try:
        while chunk := read(2**16, decode_content=True):
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise RemoteServerError(f"evaluation server answered {request} with more than "
                                        f"{MAX_ANSWER_BYTES // 2**20} MB (a session's whole report is a few MB)")
            if time.monotonic() > deadline:
                raise ServerUnavailableError(f"evaluation server unavailable: {request}: its answer did not "
                                             f"arrive within {settings.read_timeout:g} s")
            chunks.append(chunk)
    except ReadTimeoutError as error:  # urllib3's own, as requests would raise them while reading
        raise requests.ReadTimeout(error) from error
    except urllib3.exceptions.HTTPError as error:
        raise requests.ConnectionError(error) from error
    finally:
        response.close()
    return b"".join(chunks)


class _BoundedRetry(Retry):
    """urllib3's Retry, a server's ``Retry-After`` honoured up to read_timeout: urllib3 sleeps up to 6 hours
    per retry on a 503's word (an HTTP date in 2100, or 3600), without a line, whatever the timeouts."""

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), settings.read_timeout)


def guarded_session(*_args, **_kwargs) -> requests.Session:
    """Replaces davisinteractive's ``_requests_retry_session`` (called without arguments)."""
    session = _GuardedSession()
    retry = _BoundedRetry(total=settings.retries, connect=settings.retries, read=settings.retries,
                  status=settings.retries, backoff_factor=settings.backoff,
                  # 500 is an answer (with a message), not an outage; POSTs are never repeated (urllib3's
                  # default allowed methods), so an interaction is never submitted twice.
                  status_forcelist=(502, 503, 504), raise_on_status=False)
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


_HTML = re.compile(r"\s*<(!doctype\s+html|html|head|body)\b", re.IGNORECASE)
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_HTML_SKIPPED = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)


def _page_text(response: requests.Response) -> str:
    """The text of an answer that is not JSON, as one line; an HTML page (a proxy's "502 Bad Gateway", a login
    page, a framework's debug page) by its title, else its words without tags: its first 500 characters were
    markup (`<html><head><style>...`)."""
    text = response.text
    if not (_HTML.match(text) or "html" in response.headers.get("content-type", "").lower()):
        return one_line(text)
    title = _HTML_TITLE.search(text)
    words = title.group(1) if title else re.sub(r"<[^>]*>", " ", _HTML_SKIPPED.sub(" ", text))
    return one_line(f"an HTML page: {html.unescape(words).strip()}" if words.strip() else "an HTML page")


def _error_fields(response: requests.Response) -> tuple[str, str]:
    """(name, message) of an error answer; tolerant of anything a server may send."""
    try:
        body = response.json()
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        return "", _page_text(response)
    if not isinstance(body, dict):
        return "", one_line(body)
    name = body.get("error", "")
    message = body.get("message", body.get("detail", ""))
    if isinstance(message, list | tuple):  # the framework's servers send the error's args
        message = "; ".join(str(part) for part in message)
    return (name if isinstance(name, str) else repr(name)), one_line(message)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true would be 1


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _quoted_name(name: str) -> str:
    """A server's sequence name quoted for an error, at most 80 characters of it: its words reach the terminal."""
    text = repr(name)
    return text if len(text) <= 80 else f"{text[:80]}... ({len(name)} characters)"


def _samples_problem(body) -> str | None:
    """What is wrong with a samples answer (`[[[sequence, scribble_idx], ...], max_time, max_interactions]`), or
    None. The framework unpacks and shuffles it unchecked, and the session indexes every sample."""
    if not (isinstance(body, list) and len(body) == 3):
        return f"{one_line(json.dumps(body))[:100]}, not [samples, max_time, max_interactions]"
    samples, max_time, max_interactions = body
    if not isinstance(samples, list) or not samples:
        return "no sample to play" if samples == [] else f"samples {one_line(json.dumps(samples))[:100]}, not a list"
    seen: dict[str, set[int]] = {}  # each sequence's scribble indices
    for sample in samples:
        if not (isinstance(sample, list) and len(sample) == 2 and isinstance(sample[0], str) and _is_int(sample[1])):
            return f"a sample {one_line(json.dumps(sample))[:100]}, not [sequence name, scribble index]"
        name, index = sample
        if name in ("", ".", "..") or any(character in name for character in "/\\") or not name.isprintable():
            return f"a sample of sequence {_quoted_name(name)}, not a folder name (its frames are read from the DAVIS root)"
        if len(name.encode()) > MAX_NAME_BYTES:  # a 5000-character name was a 5000-character "File name too long"
            return (f"a sample of sequence {_quoted_name(name)}, a name longer than a folder's {MAX_NAME_BYTES} bytes "
                    "(its frames are read from the DAVIS root)")
        if index < 1:
            return f"a sample {name} #{index}: scribble indices count from 1"
        if index in seen.setdefault(name, set()):  # the server refuses the second one's rounds, mid-session
            return f"sample {name} #{index} twice"
        seen[name].add(index)
    # The framework's evaluation serves each sequence's scribbles 1..N, and the run is scored over that layout: a
    # gap counted the missing samples as J = 0 (a lone index 10**9 hung the summary for ever).
    for name, indices in seen.items():
        if len(indices) != max(indices):
            missing = min(set(range(1, len(indices) + 1)) - indices)
            return (f"sample {name} #{max(indices)} but not #{missing}: a sequence's scribble indices must be 1..N "
                    "without a gap")
    # null leaves the client's own setting, as the framework does; anything else is played as given.
    if max_time is not None and not (_is_number(max_time) and 1 <= max_time <= MAX_TIME):
        return f"max_time {one_line(json.dumps(max_time))[:40]}, not a number of seconds in 1..{MAX_TIME}"
    if max_interactions is not None and not (_is_int(max_interactions) and 1 <= max_interactions <= MAX_INTERACTIONS):
        return (f"max_interactions {one_line(json.dumps(max_interactions))[:40]}, not an integer in "
                f"1..{MAX_INTERACTIONS}")
    return None


def _answer_problem(path: str, body) -> str | None:
    """What is wrong with a good (2xx) answer's JSON for what the framework does with it, or None."""
    if path.endswith("/api/dataset/samples"):
        return _samples_problem(body)
    if path.endswith("/api/evaluation/report") and not isinstance(body, dict | list):
        return f"a report {one_line(json.dumps(body))[:100]}, not a table"  # pandas reads columns or rows
    if path.endswith("/api/evaluation/finish") and not isinstance(body, dict):
        return f"a summary {one_line(json.dumps(body))[:100]}, not a JSON object"
    if path.endswith("/api/evaluation/finish") and first_non_finite(body) is not None:
        # Python's reader takes NaN, Infinity and 1e999: written into summary.json, which strict JSON readers refuse
        return "a summary holding NaN or an infinite number, which JSON has not"
    return None


def handle_response(self, response: requests.Response, raise_error: bool = False) -> bool:
    """Replaces ``RemoteConnector._handle_response``: returns False for a good answer, raises otherwise
    (also for the health check, which the framework would turn into a NameError)."""
    del raise_error  # every error raises: a caller that goes on after one would read a wrong body
    request = f"{response.request.method} {response.url}" if response.request is not None else response.url
    status = response.status_code
    if status < 400:
        try:
            body = response.json()
        except RecursionError:  # a traceback, and the run's empty folder left behind
            raise RemoteServerError(f"evaluation server {self.host} answered {request} with JSON nested too "
                                    "deeply to read") from None
        except ValueError:
            raise RemoteServerError(f"evaluation server {self.host} answered {request} with something that is "
                                    f"not JSON: {_page_text(response)[:100]!r}") from None
        problem = _answer_problem(urllib.parse.urlsplit(response.url or "").path, body)
        if problem:
            raise RemoteServerError(f"evaluation server {self.host} answered {request} with {problem}")
        return False
    name, message = _error_fields(response)
    # Debug only: the error raised below is the one line the user sees.
    log.debug("evaluation server %s: %s -> %d %s: %s", self.host, request, status, one_line(name), message)
    error_class = SERVER_ERRORS.get(name) if status == 400 else None
    if error_class is not None:
        raise error_class(f"evaluation server {self.host}: {message}")
    what = f"an unknown error {one_line(name)[:80]!r}" if status == 400 and name else f"{status} {one_line(name)}".strip()
    raise RemoteServerError(f"evaluation server {self.host} answered {request} with {what}: {message}")


def _checked_scribbles(self, sequence: str, what: str, scribbles) -> dict:
    """The scribbles a server sent for `sequence`, checked as scribble files are (davis.validate_scribbles) and
    against the video: the framework fuses them with the sample's earlier ones unchecked."""
    from davisinteractive.dataset.davis import Davis

    from .davis import DatasetError, validate_scribbles

    meta = Davis.dataset.get(sequence, {})
    source = f"evaluation server {self.host}: {what} of {sequence}"
    try:
        validate_scribbles(scribbles, source=source, num_frames=meta.get("num_frames"),
                           num_objects=meta.get("num_objects"))
    except DatasetError as error:
        raise RemoteServerError(one_line(error)) from None
    if scribbles.get("sequence") != sequence:
        raise RemoteServerError(f"{source}: they name sequence {one_line(scribbles.get('sequence'))[:80]!r}")
    return scribbles


def get_scribble(self, sequence, scribble_idx):
    """Replaces ``RemoteConnector.get_scribble``: the framework's, its answer checked."""
    answer = _framework_methods["get_scribble"](self, sequence, scribble_idx)
    return _checked_scribbles(self, sequence, f"the scribbles #{scribble_idx}", answer)


def post_predicted_masks(self, sequence, scribble_idx, pred_masks, timing, interaction, **kwargs):
    """Replaces ``RemoteConnector.post_predicted_masks``: the framework's, the next scribbles it answers checked.
    The round is recorded first (the server may score it even if its answer is refused): a report may hold only
    the rounds this connector sent."""
    rounds = self.__dict__.setdefault("_rounds_sent", {})  # (sequence, scribble index) -> rounds sent
    key = (str(sequence), int(scribble_idx))
    rounds[key] = max(rounds.get(key, 0), int(interaction))
    answer = _framework_methods["post_predicted_masks"](self, sequence, scribble_idx, pred_masks, timing,
                                                        interaction, **kwargs)
    return _checked_scribbles(self, sequence, f"the next scribbles of sample #{scribble_idx} (after interaction "
                                              f"{interaction})", answer)


def get_report(self):
    """Replaces ``RemoteConnector.get_report``: the framework's, with the columns the session reads. An empty
    answer (no round yet) is an empty report; rows without those columns are refused."""
    from davisinteractive.storage.abstract import AbstractStorage

    try:
        report = _framework_methods["get_report"](self)
    except (ValueError, TypeError) as error:  # pandas' own, building the table (lists of unequal lengths)
        if isinstance(error, RemoteServerError):
            raise
        raise RemoteServerError(f"evaluation server {self.host} answered the report with something that is not a "
                                f"table: {one_line(error)[:200]}") from None
    missing = [column for column in AbstractStorage.COLUMNS if column not in report.columns]
    if missing and len(report):
        raise RemoteServerError(f"evaluation server {self.host} answered the report without column(s) "
                                f"{', '.join(missing)}")
    problem = _report_values_problem(report) or _report_rows_problem(report, getattr(self, "_rounds_sent", {}))
    if problem:
        raise RemoteServerError(f"evaluation server {self.host} answered the report with {problem}")
    return report.reindex(columns=[*report.columns, *missing]) if missing else report


# A report's number columns, and the range of each (the metrics are fractions, timings seconds).
REPORT_NUMBERS = {"scribble_idx": (1, math.inf), "interaction": (1, math.inf), "object_id": (1, math.inf),
                  "frame": (0, math.inf), "jaccard": (0, 1), "contour": (0, 1), "j_and_f": (0, 1),
                  "timing": (0, math.inf)}


def _report_values_problem(report) -> str | None:
    """A report value that is not a finite number in its column's range, or None: the summary read text as a
    pandas ValueError naming no server, and an infinite J or a negative timing as AUC nan, exit 0."""
    import numpy as np
    import pandas as pd

    for column, (low, high) in REPORT_NUMBERS.items():
        if column not in report.columns or not len(report):
            continue
        values = pd.to_numeric(report[column], errors="coerce").to_numpy(dtype=float)
        bad = ~(np.isfinite(values) & (values >= low) & (values <= high))
        if bad.any():
            row = int(np.argmax(bad))
            value = report[column].iloc[row]
            value = value.item() if isinstance(value, np.generic) else value  # nan, not np.float64(nan)
            return (f"{column} {one_line(repr(value))[:40]} in row {row}, not a finite number "
                    f"in {low:g}..{high:g}")
    return None


def _report_rows_problem(report, rounds_sent: dict[tuple[str, int], int]) -> str | None:
    """The first row of a round this session never sent (another sample, an interaction past the rounds sent), or of
    an object or frame its video lacks, or None (the values are checked first). The summary scores the samples
    played and left such rows out without a word: a report of none of them was AUC 0.000, exit 0."""
    import numpy as np
    import pandas as pd
    from davisinteractive.dataset.davis import Davis

    if not len(report):
        return None
    sent = pd.DataFrame([(name, float(index), rounds, *_video_limits(Davis.dataset.get(name, {})))
                         for (name, index), rounds in rounds_sent.items()],
                        columns=["sequence", "scribble_idx", "_rounds", "_objects", "_frames"])
    rows = pd.DataFrame({"sequence": report["sequence"].to_numpy(dtype=object),
                         "scribble_idx": pd.to_numeric(report["scribble_idx"]).to_numpy(dtype=float)})
    limits = rows.merge(sent, how="left", on=["sequence", "scribble_idx"])  # in the report's order

    def beyond(column: str, limit: str):
        values = pd.to_numeric(report[column]).to_numpy(dtype=float)
        return (values % 1 != 0) | (values + (column == "frame") > limits[limit].to_numpy(dtype=float))

    checks = ((lambda: limits["_rounds"].isna().to_numpy(), "a sample this session did not play"),
              (lambda: beyond("interaction", "_rounds"), "a round this session did not submit"),
              (lambda: beyond("object_id", "_objects"), "an object its video does not have"),
              (lambda: beyond("frame", "_frames"), "a frame its video does not have"))
    for check, what in checks:  # in order: the limits of a sample not played are unknown
        bad = check()
        if bad.any():
            row = int(np.argmax(bad))
            value = {column: report[column].iloc[row] for column in ("sequence", "scribble_idx", "interaction",
                                                                       "object_id", "frame")}
            value = {column: item.item() if isinstance(item, np.generic) else item for column, item in value.items()}
            return (f"row {row} ({one_line(repr(value['sequence']))[:80]} #{value['scribble_idx']} interaction "
                    f"{value['interaction']}, object {value['object_id']}, frame {value['frame']}) of {what}")
    return None


def _video_limits(meta: dict) -> tuple[float, float]:
    """(objects, frames) of a registered sequence's metadata; no limit where it has none."""
    objects, frames = meta.get("num_objects"), meta.get("num_frames")
    return (objects if _is_int(objects) else math.inf), (frames if _is_int(frames) else math.inf)


def install() -> None:
    """Patch davisinteractive's RemoteConnector (numpy must be patched first: see agent.data.compat)."""
    from davisinteractive.connector import remote

    global _framework_handle_response
    if remote.RemoteConnector._handle_response is not handle_response:
        _framework_handle_response = remote.RemoteConnector._handle_response  # kept for the tests only
    remote.RemoteConnector._handle_response = handle_response
    remote._requests_retry_session = guarded_session
    for method in (get_scribble, post_predicted_masks, get_report):
        name = method.__name__
        if getattr(remote.RemoteConnector, name) is not method:
            _framework_methods[name] = getattr(remote.RemoteConnector, name)
        setattr(remote.RemoteConnector, name, method)
