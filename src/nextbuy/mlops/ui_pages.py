"""The pages of the UIs nextbuy starts (MLflow's, Evidently's) as their own ASGI apps serve them,
with a small change on the way out: a script that sets MLflow's browser defaults, the page title
on-call sees in the browser tab. Their apps are left as they are."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nextbuy.serving.asgi import ASGIApp, Message, Receive, Scope, Send

# What a rewritten page must not keep: the length changes, and a browser must not answer it from
# a cache of the page as the app wrote it.
DROPPED_HEADERS = (b"content-length", b"etag", b"last-modified", b"cache-control")
CONDITIONAL_HEADERS = (b"if-none-match", b"if-modified-since")


class PageRewrite:
    """ASGI wrapper: a GET of a path ``rewrites(path)`` accepts that the app answers with a 200
    HTML page gets ``rewrite(page)`` instead, is never answered 304 from a browser's cache of the
    page as the app wrote it, and is not cached itself. Every other answer passes untouched."""

    def __init__(
        self, app: ASGIApp, rewrite: Callable[[bytes], bytes], rewrites: Callable[[str], bool]
    ) -> None:
        self.app = app
        self.rewrite = rewrite
        self.rewrites = rewrites

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or not self.rewrites(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in CONDITIONAL_HEADERS]
        start: dict = {}
        chunks: list[bytes] = []

        async def rewritten(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                if not _is_page(start):
                    await send(message)
                return
            if message["type"] != "http.response.body" or not _is_page(start):
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = self.rewrite(b"".join(chunks))
            kept = [(k, v) for k, v in start.get("headers", []) if k.lower() not in DROPPED_HEADERS]
            kept += [(b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]
            await send({**start, "headers": kept})
            await send({"type": "http.response.body", "body": body})

        await self.app({**scope, "headers": headers}, receive, rewritten)


def _is_page(start: dict) -> bool:
    content_type = next((v for k, v in start.get("headers", []) if k.lower() == b"content-type"), b"")
    return start.get("status") == 200 and content_type.startswith(b"text/html")
