"""What the REST guards of ``nextbuy serve`` share: the ASGI types, a request header, and a
``receive`` that hands an app a body already read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def header(scope: Scope, wanted: bytes) -> bytes:
    """The value of the request header ``wanted`` (lower case), b"" when absent."""
    for name, value in scope.get("headers", ()):
        if name.lower() == wanted:
            return value
    return b""


def replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the app: the whole buffered body once, then the server's own."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed
