"""The cluster as a whole: info, every task, the networks, and the long poll on changes."""

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query

from pyswarm.manager.api.auth import Client, Reader, State
from pyswarm.manager.api.errors import documented
from pyswarm.manager.api.responses import InfoOut, IngressPortOut, NetworkOut, TaskOut, WaitOut, task_out

router = APIRouter()


@router.get("/info", response_model=InfoOut, responses=documented())
def info(_: Client, read: Reader) -> InfoOut:
    return InfoOut(**asdict(read.info()))


@router.get("/tasks", response_model=list[TaskOut], responses=documented())
def tasks(_: Client, read: Reader) -> list[TaskOut]:
    return [task_out(t) for t in read.tasks()]


@router.get("/events/wait", response_model=WaitOut, responses=documented())
def wait(
    _: Client,
    state: State,
    seen: Annotated[int, Query(ge=0)] = 0,
    timeout: Annotated[float, Query(ge=0, le=30)] = 10.0,
) -> WaitOut:
    """Long poll: returns when the cluster state changes after `seen`, or at the timeout."""
    return WaitOut(counter=state.wait_for_change(seen, timeout))


@router.get("/networks", response_model=list[NetworkOut], responses=documented())
def networks(_: Client, read: Reader) -> list[NetworkOut]:
    nodes = read.nodes()
    synced = sorted(n.hostname for n in nodes if n.ingress_synced)
    unsynced = sorted(n.hostname for n in nodes if not n.ingress_synced)
    ports = {
        f"{port.published}/{port.protocol}": IngressPortOut(
            service=port.service_name,
            endpoints=[f"{e.node_addr}:{e.host_port}" for e in port.endpoints],
            synced_nodes=synced,
            unsynced_nodes=unsynced,
        )
        for port in read.mesh_ports()
    }
    cluster_id = read.info().cluster_id
    return [NetworkOut(id=cluster_id[:12], name="ingress", driver="overlay", scope="swarm", node="", ports=ports)]
