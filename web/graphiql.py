"""GraphiQL, served by Rollcall itself: the page at `GET /graphql` (for a browser) and its scripts and style
sheet from the package's own files under /static/graphiql/, so it works with no internet connection.

The page runs no inline script and nothing from elsewhere (`script-src 'self'`). The bundle is GraphiQL and
React, built from pinned npm packages by tools/graphiql/ (their licences are in LICENSES.txt beside it);
`rollcall-graphiql.js` starts it: it sends the CSRF header, so the session cookie of a signed-in browser
works, and a bearer token pasted into the Headers tab works too; and it gives GraphiQL a storage of the page's
own, so nothing typed (a password in a query or its variables) is left in localStorage.
"""

from __future__ import annotations

import secrets
from html import escape
from importlib.resources import files
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from web.http_auth import CSRF_HEADER

STATIC_PATH = "/static/graphiql"
# Where the files are inside the installed package (pyproject.toml lists them as package data).
STATIC_DIR = Path(str(files("web") / "static" / "graphiql"))
FILES = ("graphiql.bundle.js", "graphiql.min.css", "rollcall-graphiql.js", "rollcall-graphiql.css")


def content_security_policy(style_nonce: str) -> str:
    # GraphiQL's menus add one <style> element at run time; it carries this page's nonce.
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            f"style-src 'self' 'nonce-{style_nonce}'",
            "img-src 'self' data:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def graphiql_page(endpoint: str = "/graphql") -> HTMLResponse:
    nonce = secrets.token_urlsafe(18)
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Rollcall GraphiQL</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{STATIC_PATH}/graphiql.min.css">
<link rel="stylesheet" href="{STATIC_PATH}/rollcall-graphiql.css">
</head>
<body>
<div id="graphiql" data-endpoint="{escape(endpoint)}" data-csrf-header="{escape(CSRF_HEADER)}"
  data-style-nonce="{nonce}">Loading GraphiQL…</div>
<noscript>GraphiQL needs JavaScript. The API itself answers POST requests at {escape(endpoint)}.</noscript>
<script src="{STATIC_PATH}/graphiql.bundle.js"></script>
<script src="{STATIC_PATH}/rollcall-graphiql.js"></script>
</body>
</html>
"""
    return HTMLResponse(
        page,
        headers={
            "Content-Security-Policy": content_security_policy(nonce),
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )


def graphiql_static() -> StaticFiles:
    """The page's scripts and style sheet, and LICENSES.txt, with the caching headers of static files."""
    missing = [name for name in FILES if not (STATIC_DIR / name).is_file()]
    if missing:
        raise RuntimeError(f"GraphiQL's files are missing from {STATIC_DIR}: {', '.join(missing)}")
    return StaticFiles(directory=STATIC_DIR)


class ServedGraphiQL:
    """Mixed into the Strawberry view at /graphql: its GraphiQL page is this one, not Strawberry's."""

    async def render_graphql_ide(self, request: Request) -> Response:
        return graphiql_page(request.url.path)
