"""Who may call what: every route needs a bearer token. 401 (no or unknown token), then 403 (the wrong kind),
then 422 (bad input). Clients hold the client credential; join tokens may only join; a node's own secret
may only make it leave. The dependencies also hand the routes the manager's commands and read API."""

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pyswarm.manager.credentials import Credentials
from pyswarm.manager.logs import ServiceLogs
from pyswarm.manager.manager import Manager
from pyswarm.manager.nodes import NodeCommands
from pyswarm.manager.queries import ClusterReader
from pyswarm.manager.registration import Registration
from pyswarm.manager.services import ServiceCommands
from pyswarm.manager.state import ClusterState

bearer = HTTPBearer(auto_error=False, description="a client credential, join token or node secret")


def manager_of(request: Request) -> Manager:
    manager: Manager = request.app.state.manager
    return manager


def credential(request: Request, auth: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
    role = manager_of(request).credentials.token_role(auth.credentials) if auth and auth.credentials else None
    if role is None:
        raise HTTPException(401, "missing or invalid token", headers={"WWW-Authenticate": "Bearer"})
    return role


def known_query_only(request: Request) -> None:
    """Refuse query parameters the route does not have: a typo (`?forse=true`) must not be ignored."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = {param.alias for param in route.dependant.query_params}
    unknown = sorted(key for key in request.query_params if key not in known)
    if unknown:
        raise RequestValidationError(
            [
                {"loc": ("query",), "msg": f"unknown query parameter {key[:40]!r}", "type": "extra_forbidden"}
                for key in unknown
            ]
        )


def client(request: Request, role: Annotated[str, Depends(credential)]) -> str:
    if role != "client":
        raise HTTPException(403, "this token may only be used to join the swarm")
    known_query_only(request)
    return role


def joiner(request: Request, role: Annotated[str, Depends(credential)]) -> str:
    if role not in ("worker", "manager"):
        raise HTTPException(403, "joining needs a worker or manager join token")
    known_query_only(request)
    return role


def leaver(request: Request, role: Annotated[str, Depends(credential)]) -> str:
    """The node whose own secret this is."""
    if not role.startswith("node:"):
        raise HTTPException(403, "only a node's own credential can make it leave")
    known_query_only(request)
    return role.split(":", 1)[1]


Client = Annotated[str, Depends(client)]
Joiner = Annotated[str, Depends(joiner)]
LeavingNode = Annotated[str, Depends(leaver)]


def _reader(request: Request) -> ClusterReader:
    return manager_of(request).read


def _nodes(request: Request) -> NodeCommands:
    return manager_of(request).nodes


def _services(request: Request) -> ServiceCommands:
    return manager_of(request).services


def _registration(request: Request) -> Registration:
    return manager_of(request).registration


def _credentials(request: Request) -> Credentials:
    return manager_of(request).credentials


def _logs(request: Request) -> ServiceLogs:
    return manager_of(request).logs


def _state(request: Request) -> ClusterState:
    return manager_of(request).state


Reader = Annotated[ClusterReader, Depends(_reader)]
Registrar = Annotated[Registration, Depends(_registration)]
Tokens = Annotated[Credentials, Depends(_credentials)]
Logs = Annotated[ServiceLogs, Depends(_logs)]
# Only for waiting on changes (the long poll): routes read through Reader.
State = Annotated[ClusterState, Depends(_state)]
Nodes = Annotated[NodeCommands, Depends(_nodes)]
Services = Annotated[ServiceCommands, Depends(_services)]
