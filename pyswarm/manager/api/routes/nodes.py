"""Nodes: list, add, inspect, update, remove, and a node's tasks."""

from typing import Annotated
from urllib.parse import urlparse

from fastapi import APIRouter, Path

from pyswarm.manager.api.auth import Client, Nodes, Reader, Registrar
from pyswarm.manager.api.errors import documented
from pyswarm.manager.api.requests import NodeAddIn, NodeUpdateIn
from pyswarm.manager.api.responses import NodeOut, TaskOut, node_out, task_out
from pyswarm.model import Availability, NodeRole

# Node and service references: an ID, an ID prefix or a name (the CLI refuses longer ones too).
Ref = Annotated[str, Path(min_length=1, max_length=256, description="ID, unique ID prefix, or name")]

router = APIRouter()


@router.get("/nodes", response_model=list[NodeOut], responses=documented())
def nodes(_: Client, read: Reader) -> list[NodeOut]:
    return [node_out(n) for n in read.nodes()]


@router.post("/nodes", response_model=NodeOut, status_code=201, responses=documented(400, 409))
def node_add(body: NodeAddIn, _: Client, registration: Registrar) -> NodeOut:
    addr = body.addr or (urlparse(body.engine_url).hostname or "")
    node, _secret = registration.add_node(body.engine_url, addr, None, **body.access())
    return node_out(node)


@router.get("/nodes/{ref}", response_model=NodeOut, responses=documented(404, 409))
def node_get(ref: Ref, _: Client, read: Reader) -> NodeOut:
    return node_out(read.node(ref))


@router.post("/nodes/{ref}/update", response_model=NodeOut, responses=documented(400, 404, 409))
def node_update(ref: Ref, body: NodeUpdateIn, _: Client, commands: Nodes) -> NodeOut:
    node = commands.update(
        ref,
        availability=Availability(body.availability) if body.availability else None,
        label_add=body.label_add,
        label_rm=body.label_rm,
        role=NodeRole(body.role) if body.role else None,
    )
    return node_out(node)


@router.delete("/nodes/{ref}", status_code=204, responses=documented(400, 404, 409))
def node_rm(ref: Ref, _: Client, commands: Nodes, force: bool = False) -> None:
    commands.remove(ref, force)


@router.get("/nodes/{ref}/tasks", response_model=list[TaskOut], responses=documented(404, 409))
def node_tasks(ref: Ref, _: Client, read: Reader) -> list[TaskOut]:
    return [task_out(t) for t in read.tasks(node_ref=ref)]
