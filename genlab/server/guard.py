"""The checks every request passes before the app sees it (an ASGI middleware), against attacks that come
through the user's own browser or an oversized body:

- DNS rebinding: a page on evil.example whose name is re-pointed at 127.0.0.1 reaches a loopback server
  with ``Host: evil.example``; only the names the server was started for are answered (400 otherwise).
- Cross-site requests: any page may POST a form or a "simple" fetch to a loopback server without a CORS
  preflight; a costly or state-changing request (anything but GET, HEAD, OPTIONS) must come from the
  app's own origin (by Origin, else Sec-Fetch-Site, else Referer; clients that send none, like curl,
  are not browsers and pass), 403 otherwise.
- Body size: the body is counted while it is read and refused with 413 once over the limit, and at once
  when Content-Length announces more, so a client cannot make the server buffer gigabytes.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("", "0.0.0.0", "::")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
DEFAULT_PORTS = {"http": 80, "https": 443}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address to bind) is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(bind: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The Host names a server bound to ``bind`` answers: ``bind`` itself, the loopback names when it is
    a loopback address, this machine's name and addresses when it binds every interface, and ``extra``
    (e.g. a DNS name that points at this machine: ``genlab serve --allowed-host``)."""
    names = {bind, *extra}
    if is_loopback(bind) or bind in WILDCARDS:
        names.update(LOOPBACK_NAMES)
    if bind in WILDCARDS:
        names.discard(bind)
        machine = socket.gethostname()
        names.add(machine)
        try:
            names.update(info[4][0] for info in socket.getaddrinfo(machine, None))
        except OSError:  # a machine whose own name does not resolve: its name alone
            pass
    return frozenset(_hostname(n) for n in names if n)


def _hostname(host: str) -> str:
    """``host`` as compared: lower case, no port, no brackets, no trailing dot ("[::1]:80" -> "::1")."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def _authority(netloc: str, scheme: str) -> str:
    """``netloc`` with the scheme's default port dropped, lower case: what two same-origin URLs share."""
    netloc = netloc.strip().lower()
    default = DEFAULT_PORTS.get(scheme)
    if default is not None and netloc.endswith(f":{default}") and not netloc.endswith("]"):
        netloc = netloc[: -len(f":{default}")]
    return netloc


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once the body is over the limit. An HTTPException, so that FastAPI passes it
    through its body parsing unchanged and the app answers it as JSON."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than {limit} bytes")


class Guard:
    """Host check, same-origin check for costly requests, and a cap on the request body (see the module
    docstring). ``hosts`` None answers any Host (library use, behind a proxy that checks it)."""

    def __init__(self, app: ASGIApp, hosts: Iterable[str] | None, max_body_bytes: int):
        self.app = app
        self.hosts = None if hosts is None else frozenset(_hostname(h) for h in hosts)
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await _answer(send, *refusal)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as e:  # raised where the app could not turn it into a response itself
            if started:
                raise
            await _answer(send, 413, str(e.detail))

    def _refusal(self, scope: Scope, headers: Headers) -> tuple[int, str] | None:
        """(status, message) if the request is refused before it is read, else None."""
        host = headers.get("host", "")
        if self.hosts is not None and _hostname(host) not in self.hosts:
            shown = _hostname(host)[:100] or "(none)"
            return 400, (
                f"this server does not answer for the host name {shown!r}; if that name is this machine, "
                "start genlab serve with --allowed-host NAME"
            )
        if scope["method"] not in SAFE_METHODS:
            own = _authority(host, scope.get("scheme", "http"))
            origin = headers.get("origin")
            site = headers.get("sec-fetch-site")
            referer = headers.get("referer")
            if origin is not None:
                parts = urlsplit(origin)
                foreign = origin == "null" or _authority(parts.netloc, parts.scheme) != own
            elif site is not None:
                foreign = site not in ("same-origin", "none")
            elif referer:
                parts = urlsplit(referer)
                foreign = _authority(parts.netloc, parts.scheme) != own
            else:
                foreign = False
            if foreign:
                return 403, "cross-site request refused: this API answers pages of its own origin only"
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                return 400, "Content-Length is not a number"
            if int(length) > self.max_body_bytes:
                return 413, f"the request body is larger than {self.max_body_bytes} bytes"
        return None


async def _answer(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 413:  # the rest of the body is not read: the connection cannot be reused
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
