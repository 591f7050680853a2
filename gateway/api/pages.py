"""The key holder's pages, Activity and Credits: each one static HTML file with its script and
style, no CDN, served with headers that keep it from being framed, cached stale or fed another
origin's script. Each page asks the key holder for the key itself (kept in the tab's session
storage, which both share) and reads the APIs with it."""

from pathlib import Path

from aiohttp import web

from gateway.http.describe import OPEN, STRING, described, errors, op, path, text
from gateway.http.errors import ApiError

routes = web.RouteTableDef()
STATIC = Path(__file__).parent / "static"
_PAGE_FILES = {
    "activity": {"activity.js": "text/javascript", "activity.css": "text/css"},
    "credits": {"credits.js": "text/javascript", "credits.css": "text/css"},
}
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


@routes.get("/activity")
@described(
    op(
        "The Activity page (it asks for the key itself)",
        "activity",
        OPEN,
        {"200": text("text/html", "The page")},
    )
)
async def page(request: web.Request) -> web.FileResponse:
    """The Activity page: static, no CDN; it asks the key holder for the key itself."""
    return web.FileResponse(STATIC / "activity.html", headers=_PAGE_HEADERS)


@routes.get("/activity/{name}")
@described(
    op(
        "The Activity page's script and style",
        "activity",
        OPEN,
        {
            "200": {
                "description": "The file",
                "content": {"text/javascript": {"schema": STRING}, "text/css": {"schema": STRING}},
            },
            **errors(404),
        },
        parameters=[path("name", "activity.js or activity.css")],
    )
)
async def page_asset(request: web.Request) -> web.FileResponse:
    return _asset(request, "activity")


@routes.get("/credits")
@described(
    op(
        "The Credits page: add credits, refunds, auto top-up (it asks for the key itself)",
        "credits",
        OPEN,
        {"200": text("text/html", "The page")},
    )
)
async def credits_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "credits.html", headers=_PAGE_HEADERS)


@routes.get("/credits/{name}")
@described(
    op(
        "The Credits page's script and style",
        "credits",
        OPEN,
        {
            "200": {
                "description": "The file",
                "content": {"text/javascript": {"schema": STRING}, "text/css": {"schema": STRING}},
            },
            **errors(404),
        },
        parameters=[path("name", "credits.js or credits.css")],
    )
)
async def credits_asset(request: web.Request) -> web.FileResponse:
    return _asset(request, "credits")


def _asset(request: web.Request, page: str) -> web.FileResponse:
    name = request.match_info["name"]
    media_type = _PAGE_FILES[page].get(name)
    if media_type is None:
        raise ApiError(404, "no such file", "not_found")
    return web.FileResponse(STATIC / name, headers={**_PAGE_HEADERS, "Content-Type": media_type})
