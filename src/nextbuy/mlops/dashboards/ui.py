"""`make dashboards`: Evidently's UI over the monitor stage's workspace, as ``evidently ui``
serves it, with the browser tab titled for what on-call has open (Evidently's own page reads
"Evidently - ML Monitoring Demo" whatever it shows)::

    python -m nextbuy.mlops.dashboards.ui --workspace monitoring/workspace --port 8000
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from nextbuy.mlops.ui_pages import PageRewrite
from nextbuy.procs import HOST

if TYPE_CHECKING:
    from nextbuy.serving.asgi import ASGIApp

TITLE = "nextbuy on-call dashboards (Evidently)"
DEFAULT_PORT = 8000
_TITLE_TAG = re.compile(rb"<title>.*?</title>", re.DOTALL)


def retitled(page: bytes) -> bytes:
    """The page with its <title> replaced by :data:`TITLE`."""
    return _TITLE_TAG.sub(f"<title>{TITLE}</title>".encode(), page, count=1)


def is_ui_page(path: str) -> bool:
    """Paths the single-page UI answers with its index.html (not its API or its static files)."""
    return not path.startswith(("/api", "/static"))


def titled(app: ASGIApp) -> PageRewrite:
    return PageRewrite(app, retitled, is_ui_page)


def serve(workspace: str, port: int = DEFAULT_PORT, host: str = HOST) -> None:
    """Evidently's UI service (``evidently ui``'s app) in this process until SIGINT/SIGTERM."""
    import uvicorn
    from evidently.ui.service.app import create_app, get_config

    config = get_config(host=host, port=port, workspace=workspace)
    uvicorn.run(titled(create_app(config)), host=host, port=port, timeout_graceful_shutdown=3)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description=serve.__doc__)
    parser.add_argument("--workspace", default="monitoring/workspace")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--host", default=HOST)
    args = parser.parse_args(argv)
    serve(args.workspace, args.port, args.host)


if __name__ == "__main__":  # pragma: no cover
    main()
