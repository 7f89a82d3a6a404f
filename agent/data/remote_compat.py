"""The framework's HTTP client made safe: davisinteractive's ``RemoteConnector`` patched at run time.

davisinteractive 1.0.4's ``RemoteConnector._handle_response`` runs ``eval()`` on the error name a server
sends back, so a hostile or spoofed server could run code on the evaluating machine; its requests have no
timeout, so a server that stops answering hangs the session for ever. :func:`install` (called by
``agent.data.compat.apply``) replaces

* ``_handle_response`` by :func:`handle_response`: a server error name is looked up in a fixed table of the
  error classes the framework's evaluation raises (:data:`SERVER_ERRORS`); any other name, a 4xx/5xx
  answer or a body that is not JSON is one :class:`RemoteServerError` quoting the server's message;
* ``_requests_retry_session`` by one whose requests all have connection and read timeouts and whose
  network failures are one :class:`ServerUnavailableError` naming the request.

The connector itself (its URLs, encoding, headers) stays the framework's; none of its code is copied here.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 500  # of a server's message quoted in an error: one readable line, whatever it sends


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


def configure(connect_timeout: float, read_timeout: float, retries: int) -> None:
    """Timeouts and retries of every request the framework's RemoteConnector makes from now on."""
    settings.connect_timeout = connect_timeout
    settings.read_timeout = read_timeout
    settings.retries = retries


def _one_line(text: object) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "..."


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
    return match.group(1).strip() if match else type(error).__name__


class _GuardedSession(requests.Session):
    """A requests session with timeouts on every request and one clear error when the server is gone."""

    def request(self, method, url, *args, **kwargs):
        kwargs.setdefault("timeout", (settings.connect_timeout, settings.read_timeout))
        try:
            return super().request(method, url, *args, **kwargs)
        except requests.RequestException as error:
            raise ServerUnavailableError(
                f"evaluation server unavailable: {method} {url}: {_short_reason(error)}") from error


def guarded_session(*_args, **_kwargs) -> requests.Session:
    """Replaces davisinteractive's ``_requests_retry_session`` (called without arguments)."""
    session = _GuardedSession()
    retry = Retry(total=settings.retries, connect=settings.retries, read=settings.retries,
                  status=settings.retries, backoff_factor=settings.backoff,
                  # 500 is an answer (with a message), not an outage; POSTs are never repeated (urllib3's
                  # default allowed methods), so an interaction is never submitted twice.
                  status_forcelist=(502, 503, 504), raise_on_status=False)
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _error_fields(response: requests.Response) -> tuple[str, str]:
    """(name, message) of an error answer; tolerant of anything a server may send."""
    try:
        body = response.json()
    except ValueError:
        return "", _one_line(response.text)
    if not isinstance(body, dict):
        return "", _one_line(body)
    name = body.get("error", "")
    message = body.get("message", body.get("detail", ""))
    if isinstance(message, list | tuple):  # the framework's servers send the error's args
        message = "; ".join(str(part) for part in message)
    return (name if isinstance(name, str) else repr(name)), _one_line(message)


def handle_response(self, response: requests.Response, raise_error: bool = False) -> bool:
    """Replaces ``RemoteConnector._handle_response``: returns False for a good answer, raises otherwise
    (also for the health check, which the framework would turn into a NameError)."""
    del raise_error  # every error raises: a caller that goes on after one would read a wrong body
    request = f"{response.request.method} {response.url}" if response.request is not None else response.url
    status = response.status_code
    if status < 400:
        try:
            response.json()
        except ValueError:
            raise RemoteServerError(f"evaluation server {self.host} answered {request} with something that is "
                                    f"not JSON: {_one_line(response.text)[:100]!r}") from None
        return False
    name, message = _error_fields(response)
    # Debug only: the error raised below is the one line the user sees.
    log.debug("evaluation server %s: %s -> %d %s: %s", self.host, request, status, _one_line(name), message)
    error_class = SERVER_ERRORS.get(name) if status == 400 else None
    if error_class is not None:
        raise error_class(f"evaluation server {self.host}: {message}")
    what = f"an unknown error {_one_line(name)[:80]!r}" if status == 400 and name else f"{status} {_one_line(name)}".strip()
    raise RemoteServerError(f"evaluation server {self.host} answered {request} with {what}: {message}")


def install() -> None:
    """Patch davisinteractive's RemoteConnector (numpy must be patched first: see agent.data.compat)."""
    from davisinteractive.connector import remote

    global _framework_handle_response
    if remote.RemoteConnector._handle_response is not handle_response:
        _framework_handle_response = remote.RemoteConnector._handle_response  # kept for the tests only
    remote.RemoteConnector._handle_response = handle_response
    remote._requests_retry_session = guarded_session
