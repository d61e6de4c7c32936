"""The browser client's routes on the router's app: the page, its files, the persona list.

  GET /             the page (`services/server/web/index.html`); no key needed for static files,
                    the page asks for one when the API answers 401.
  GET /web/...      its scripts and styles.
  GET /v1/personas  what the persona picker lists (`services.server.client.persona_listing`),
                    authenticated like every /v1 endpoint.

Plain functions rather than `Router` methods, so router.py only calls `add_client(app)`; the
listing reaches the replica's `Router` (its authenticator and personas) through Serve's replica
context. Relative URLs in the page keep it working under a route prefix or behind an Ingress.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Security
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from ray import serve

from services.server.client import WEB_DIR, persona_listing
from services.server.requests import ApiError

# Files change with the package version only, but a stale cached app.js against a newer server
# is the classic browser-client bug: revalidate each time (they are small).
_NO_CACHE = {"cache-control": "no-cache"}
_ERROR = {
    "description": "No API key, a bad one, or one without the scope",
    "content": {"application/json": {"schema": {"type": "object", "required": ["error"],
                "properties": {"error": {"type": "string"}}}}},
}  # fmt: skip
_LISTING = {
    "type": "object",
    "required": ["personas", "default", "plain_chat"],
    "properties": {"personas": {"type": "array", "items": {"type": "object", "required": [
        "id", "name", "role", "greeting", "consent", "consent_summary", "documents"]}},
        "default": {"type": ["string", "null"]}, "plain_chat": {"type": "boolean"}},
}  # fmt: skip


class _Files(StaticFiles):
    async def get_response(self, path: str, scope: Any):
        response = await super().get_response(path, scope)
        response.headers.update(_NO_CACHE)
        return response


def add_client(app: FastAPI) -> None:
    """Add the client's routes to `app` (before Serve wraps it, like every route)."""
    app.mount("/web", _Files(directory=WEB_DIR), name="web")

    @app.get("/", include_in_schema=False)
    async def page(request: Request):
        # Under a route prefix the page is `/prefix`: its relative URLs need `/prefix/`.
        path = request.scope.get("root_path", "") + request.scope.get("path", "/")
        if not path.endswith("/"):
            query = f"?{request.url.query}" if request.url.query else ""
            return RedirectResponse(f"{path}/{query}", status_code=307)
        return FileResponse(WEB_DIR / "index.html", headers=_NO_CACHE)

    @app.get(
        "/v1/personas",
        summary="The personas this API key may talk to, for a persona picker",
        dependencies=[Security(HTTPBearer(auto_error=False, description="Bearer avk_..."))],
        responses={
            200: {"description": "Personas", "content": {"application/json": {"schema": _LISTING}}},
            401: _ERROR,
        },
    )
    async def personas(request: Request) -> JSONResponse:
        router = serve.get_replica_context().servable_object
        try:
            principal = router.auth.http(request.headers)
        except ApiError as exc:
            return JSONResponse({"error": exc.reason}, status_code=exc.status)
        return JSONResponse(persona_listing(router.conversation.personas, principal))
