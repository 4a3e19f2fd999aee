"""The Content-Security-Policy of the pages the front hosts (its API documentation).

An API response gets a CSP that runs nothing (``api/edge.API_HEADERS``). The two
documentation pages FastAPI renders need their own: scripts from their CDN and,
for Swagger UI, one inline script, allowed by its SHA-256 (not ``'unsafe-inline'``).
The hashes are taken from the HTML the app itself serves, so a FastAPI upgrade
that changes the page changes the policy with it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from paynode.api.edge import API_HEADERS, HOSTED_PAGES

_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)
_CDN = "https://cdn.jsdelivr.net"


def _hashes(pattern: re.Pattern[bytes], html: bytes) -> str:
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(m).digest()).decode()}'"
        for m in pattern.findall(html)
    )


def policy(html: bytes) -> bytes:
    """A strict CSP for ``html``: its own inline scripts by hash, the CDN's files, the
    spec from this origin, no framing, no forms, no plugins. Styles may be inline: the
    documentation's libraries set them at run time (a hash there would disable that)."""
    scripts = _hashes(_INLINE_SCRIPT, html)
    return (
        f"default-src 'none'; script-src {_CDN} {scripts}; "
        f"style-src {_CDN} https://fonts.googleapis.com 'unsafe-inline'; "
        "font-src https://fonts.gstatic.com; img-src 'self' data: https:; "
        "connect-src 'self'; worker-src blob:; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'"
    ).encode()


def page_headers(app: Any) -> dict[str, list[tuple[bytes, bytes]]]:
    """The security headers of each hosted page of ``app`` (a FastAPI app)."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

    pages = {
        "swagger": get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=app.swagger_ui_oauth2_redirect_url,
            init_oauth=app.swagger_ui_init_oauth, swagger_ui_parameters=app.swagger_ui_parameters,
        ).body,
        "redoc": get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title} - ReDoc").body,
    }  # fmt: skip
    assert set(pages) == set(HOSTED_PAGES.values())
    base = [h for h in API_HEADERS if h[0] != b"content-security-policy"]
    return {name: [*base, (b"content-security-policy", policy(bytes(html)))]
            for name, html in pages.items()}  # fmt: skip
