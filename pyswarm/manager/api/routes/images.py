"""Images: what the nodes hold, and `docker load` of one uploaded stream on many nodes (`pyswarm image push`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import anyio
import anyio.from_thread
import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from pyswarm.manager.api.auth import Client, manager_of
from pyswarm.manager.api.errors import documented
from pyswarm.manager.api.limits import uncapped
from pyswarm.manager.errors import Invalid
from pyswarm.manager.images import ImageDistributor

router = APIRouter()

# The upload is handed to the nodes in pieces of about this many bytes (fewer hops between the event loop and
# the feeding thread than the network's own pieces).
PIECE = 1024 * 1024


def _images(request: Request) -> ImageDistributor:
    return manager_of(request).images


Images = Annotated[ImageDistributor, Depends(_images)]
NodeRefs = Annotated[list[str] | None, Query(max_length=1000, description="only these nodes (default: all ready)")]


class ImageOut(BaseModel):
    id: str
    tags: list[str]
    digests: list[str]
    size: int


class NodeImagesOut(BaseModel):
    node_id: str
    node: str
    images: list[ImageOut]
    error: str


class LoadResultOut(BaseModel):
    node_id: str
    node: str
    ok: bool
    error: str
    loaded: list[str]
    seconds: float


class LoadOut(BaseModel):
    nodes: list[LoadResultOut]


@router.get("/images", response_model=list[NodeImagesOut], responses=documented())
def images(_: Client, distributor: Images) -> list[NodeImagesOut]:
    return [
        NodeImagesOut(
            node_id=listing.node_id,
            node=listing.hostname,
            images=[ImageOut(id=i.id, tags=list(i.tags), digests=list(i.digests), size=i.size) for i in listing.images],
            error=listing.error,
        )
        for listing in distributor.node_images()
    ]


@router.post(
    "/images/load",
    response_model=LoadOut,
    responses=documented(400, 404, 409),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "a `docker save` tar stream, of any size (streamed, never held whole)",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
@uncapped
async def images_load(
    request: Request,
    _: Client,
    distributor: Images,
    node: NodeRefs = None,
) -> LoadOut:
    """`docker load` the body on every ready node (or those named), all at once, as it arrives; one result per
    node. A node that fails does not stop the others: read each result."""
    targets = await anyio.to_thread.run_sync(distributor.targets, node)
    try:
        results = await anyio.to_thread.run_sync(distributor.fan_out, _pieces(request), targets)
    except ClientDisconnect:
        raise Invalid("the upload ended before the image did: no node loaded it") from None
    return LoadOut(
        nodes=[
            LoadResultOut(
                node_id=r.node_id, node=r.hostname, ok=not r.error, error=r.error, loaded=r.loaded, seconds=r.seconds
            )
            for r in results
        ]
    )


def _pieces(request: Request) -> Iterator[bytes]:
    """The request body for a worker thread, a piece at a time: each is read on the event loop when the thread
    asks for it, so the client is read no faster than the nodes load (h11 stops reading the socket meanwhile)."""
    stream = request.stream().__aiter__()

    async def next_piece() -> bytes:
        parts: list[bytes] = []
        size = 0
        while size < PIECE:
            try:
                chunk = await stream.__anext__()
            except StopAsyncIteration:
                break
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts)

    while piece := anyio.from_thread.run(next_piece):
        yield piece
