"""The manager's HTTP API (FastAPI): the app, its error handlers, and its routers.

Every refusal is a 4xx with `{"detail": "<message>"}` (documented per route), and leaves the state as it
was. The OpenAPI schema is served at /openapi.json, to clients only; there are no /docs pages.
"""

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from pyswarm import __version__
from pyswarm.manager.api.auth import Client
from pyswarm.manager.api.errors import status_of, validation_message
from pyswarm.manager.api.limits import Limits
from pyswarm.manager.api.routes import ca, cluster, configs, nodes, secrets, services, swarm
from pyswarm.manager.api.routes import images as image_routes
from pyswarm.manager.errors import ManagerError
from pyswarm.manager.manager import Manager
from pyswarm.model.parse import SpecError


def create_app(manager: Manager) -> FastAPI:
    app = FastAPI(
        title="pyswarm manager",
        version=__version__,
        description="Docker swarm mode rebuilt in Python. Every call needs `Authorization: Bearer <token>`. "
        "Serve it on a private network, or behind a TLS-terminating proxy: the API itself speaks plain HTTP.",
        openapi_url=None,  # served below, behind the client credential
        docs_url=None,
        redoc_url=None,
    )
    app.state.manager = manager
    # Authentication and the body size cap, before any body is read (pyswarm/manager/api/limits.py).
    app.add_middleware(Limits)
    _add_error_handlers(app)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_: Client) -> JSONResponse:
        return JSONResponse(app.openapi())

    for module in (ca, cluster, swarm, nodes, services, secrets, configs):
        app.include_router(module.router)
    app.include_router(image_routes.router)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ManagerError)
    @app.exception_handler(SpecError)
    async def _refused(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ManagerError | SpecError)
        return JSONResponse({"detail": str(exc)}, status_code=status_of(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            # Starlette names only the first route of the path; RFC 9110 wants every method it has.
            allowed = {
                method
                for route in app.router.routes
                if route.matches(request.scope)[0] is not Match.NONE
                for method in getattr(route, "methods", None) or ()
            }
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(allowed))}
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_message(list(exc.errors()))}, status_code=422)
