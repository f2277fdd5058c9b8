"""The cluster CA's certificate: the one route without a token. A joining node fetches it over TLS it cannot
verify yet, checks its digest against the one in its join token, and only then trusts the manager."""

from fastapi import APIRouter, HTTPException
from fastapi.responses import PlainTextResponse

from pyswarm.manager.api.auth import Tokens

router = APIRouter()


@router.get(
    "/swarm/ca",
    response_class=PlainTextResponse,
    responses={200: {"description": "the cluster CA certificate, PEM"}, 404: {"description": "no CA"}},
)
def ca_certificate(tokens: Tokens) -> PlainTextResponse:
    pem = tokens.ca_certificate()
    if pem is None:
        raise HTTPException(404, "this swarm has no certificate authority (made before TLS): run `swarm init` anew")
    return PlainTextResponse(pem)
