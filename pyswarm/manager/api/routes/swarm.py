"""Joining and leaving the swarm, and the join tokens."""

from typing import Literal

from fastapi import APIRouter, Request

from pyswarm.manager.api.auth import Client, Joiner, LeavingNode, Nodes, Registrar, Tokens
from pyswarm.manager.api.errors import documented
from pyswarm.manager.api.requests import JoinIn
from pyswarm.manager.api.responses import JoinOut, TokenOut
from pyswarm.model import NodeRole

router = APIRouter()


@router.post("/swarm/join", response_model=JoinOut, responses=documented(400, 409))
def join(request: Request, body: JoinIn, role: Joiner, registration: Registrar, tokens: Tokens) -> JoinOut:
    """Bound to the caller: the node's address must be the one this request comes from (403 otherwise)."""
    node_role = NodeRole.MANAGER if role == "manager" else NodeRole.WORKER
    source = request.client.host if request.client is not None else ""
    node, secret = registration.add_node(
        body.engine_url, body.addr, body.engine_id, node_role, **body.access(), join=body.claim(source)
    )
    return JoinOut(
        node_id=node.id,
        node_secret=secret,
        role=node.role.value,
        client_token=tokens.client_token() if role == "manager" else None,
    )


@router.post("/swarm/leave", status_code=204, responses=documented(404))
def leave(node_id: LeavingNode, nodes: Nodes) -> None:
    nodes.node_left(node_id)


@router.get("/swarm/join-token/{role}", response_model=TokenOut, responses=documented())
def join_token(role: Literal["worker", "manager"], _: Client, tokens: Tokens) -> TokenOut:
    return TokenOut(token=tokens.join_token(role, False), role=role)


@router.post("/swarm/join-token/{role}/rotate", response_model=TokenOut, responses=documented())
def rotate_token(role: Literal["worker", "manager"], _: Client, tokens: Tokens) -> TokenOut:
    return TokenOut(token=tokens.join_token(role, True), role=role)
