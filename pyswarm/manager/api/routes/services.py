"""Services: list, create, inspect, update, remove, their tasks and their logs."""

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from pyswarm.manager.api.auth import Client, Logs, Reader, Services
from pyswarm.manager.api.errors import documented
from pyswarm.manager.api.requests import ServiceUpdateIn, SpecIn
from pyswarm.manager.api.responses import IdOut, ServiceOut, TaskOut, TextStream, service_out, task_out
from pyswarm.manager.api.routes.nodes import Ref
from pyswarm.manager.errors import Invalid
from pyswarm.manager.logs import LogOptions, LogStreamsBusy
from pyswarm.model.images import registry_auth_from_header

router = APIRouter()


@router.get("/services", response_model=list[ServiceOut], responses=documented())
def services(_: Client, read: Reader) -> list[ServiceOut]:
    return [service_out(view) for view in read.services()]


# docker's --no-resolve-image: keep the image's tag instead of pinning it to a digest.
ResolveImage = Annotated[bool, Query(description="pin the image's tag to its digest, as swarm does")]
# docker's --with-registry-auth: the client's credentials for the image's registry, kept sealed for the pulls.
RegistryAuth = Annotated[
    str | None,
    Header(alias="X-Registry-Auth", max_length=16384, description="base64 of docker's AuthConfig JSON"),
]


def _registry_auth(header: str | None) -> dict[str, str] | None:
    if header is None:
        return None
    try:
        return registry_auth_from_header(header) or None
    except ValueError as exc:
        raise Invalid(str(exc)) from None


@router.post("/services", response_model=IdOut, status_code=201, responses=documented(400, 409))
def service_create(
    body: SpecIn, _: Client, commands: Services, resolve_image: ResolveImage = True, auth: RegistryAuth = None
) -> IdOut:
    registry_auth = _registry_auth(auth)
    spec, warnings = commands.pinned(body.to_spec(), auth=registry_auth) if resolve_image else (body.to_spec(), [])
    return IdOut(id=commands.create(spec, registry_auth).id, warnings=warnings)


@router.get("/services/{ref}", response_model=ServiceOut, responses=documented(404, 409))
def service_get(ref: Ref, _: Client, read: Reader) -> ServiceOut:
    return service_out(read.service(ref))


@router.post("/services/{ref}/update", response_model=ServiceOut, responses=documented(400, 404, 409))
def service_update(
    ref: Ref,
    body: ServiceUpdateIn,
    _: Client,
    commands: Services,
    read: Reader,
    resolve_image: ResolveImage = True,
    auth: RegistryAuth = None,
) -> ServiceOut:
    registry_auth = _registry_auth(auth)
    spec = body.spec.to_spec()
    spec, warnings = commands.pinned(spec, ref, registry_auth) if resolve_image else (spec, [])
    updated = commands.update(ref, spec, body.version, registry_auth)
    return service_out(read.service_view(updated)).model_copy(update={"warnings": warnings})


@router.delete("/services/{ref}", response_model=IdOut, responses=documented(404, 409))
def service_rm(ref: Ref, _: Client, commands: Services) -> IdOut:
    return IdOut(id=commands.remove(ref).id)


@router.get("/services/{ref}/tasks", response_model=list[TaskOut], responses=documented(404, 409))
def service_tasks(ref: Ref, _: Client, read: Reader) -> list[TaskOut]:
    return [task_out(t) for t in read.tasks(service_ref=ref)]


@router.get(
    "/services/{ref}/logs",
    response_class=TextStream,
    responses={
        200: {"description": "the tasks' log lines, each prefixed with its task and node, as they come"},
        **documented(404, 409, plain_route=True),
        503: {
            "description": "as many log streams are open as the manager serves at once",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
        },
    },
)
def service_logs(
    ref: Ref,
    _: Client,
    read: Reader,
    logs: Logs,
    tail: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
    follow: bool = False,
    since: Annotated[float | None, Query(ge=0, le=2**40, description="unix time: only lines from then on")] = None,
    timestamps: bool = False,
    task_ids: Annotated[bool, Query(description="false: prefix lines without task IDs (--no-task-ids)")] = True,
) -> StreamingResponse:
    # The stream is read on the event loop (no thread held while it waits for lines). It is closed when it ends,
    # or when the client goes away (the response then runs its background task), which stops its readers.
    try:
        options = LogOptions(tail=tail, follow=follow, since=since, timestamps=timestamps, task_ids=task_ids)
        stream = logs.open(read.service(ref).service, options)
    except LogStreamsBusy as exc:
        raise HTTPException(503, exc.message, headers={"Retry-After": "5"}) from None
    return TextStream(stream, background=BackgroundTask(stream.close))
