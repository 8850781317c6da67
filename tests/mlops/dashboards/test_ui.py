"""`make dashboards`: Evidently's pages as its app writes them, the browser tab retitled, and
nothing else touched (its API, its static files)."""

from __future__ import annotations

import asyncio

from nextbuy.mlops.dashboards import ui

PAGE = b"<html><head><title>Evidently - ML Monitoring Demo</title></head><body></body></html>"


def served(path: str, content_type: bytes = b"text/html; charset=utf-8", body: bytes = PAGE):
    """(status, headers, body) of one GET through the retitled app, over a stand-in app."""
    sent: list[dict] = []

    async def app(scope, receive, send):
        headers = [(b"content-type", content_type), (b"etag", b'"v1"'), (b"content-length", b"1")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": []}
    asyncio.run(ui.titled(app)(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def test_every_page_of_the_ui_is_titled_for_on_call():
    for path in ("/", "/projects/0195-abc"):
        status, headers, body = served(path)
        assert status == 200
        assert f"<title>{ui.TITLE}</title>".encode() in body
        assert b"ML Monitoring Demo" not in body
        assert headers[b"content-length"] == str(len(body)).encode()
        assert b"etag" not in headers  # a browser's cached page with the old title is not reused


def test_its_api_and_static_files_pass_untouched():
    for path, kind in (("/api/projects", b"application/json"), ("/static/js/index.js", b"text/javascript")):
        _, headers, body = served(path, kind)
        assert body == PAGE
        assert headers[b"etag"] == b'"v1"'
