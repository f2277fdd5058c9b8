"""Secrets: create, list, inspect, remove. No response carries a secret's data."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from pyswarm.manager.api.auth import Client, manager_of
from pyswarm.manager.api.errors import documented
from pyswarm.manager.api.file_objects import SecretCreateIn, SecretOut, secret_out
from pyswarm.manager.api.responses import IdOut
from pyswarm.manager.api.routes.nodes import Ref
from pyswarm.manager.secrets import SecretCommands


def _secrets(request: Request) -> SecretCommands:
    return manager_of(request).secrets


Secrets = Annotated[SecretCommands, Depends(_secrets)]

router = APIRouter()


@router.get("/secrets", response_model=list[SecretOut], responses=documented())
def secrets(_: Client, commands: Secrets) -> list[SecretOut]:
    return [secret_out(s) for s in commands.list()]


@router.post("/secrets", response_model=IdOut, status_code=201, responses=documented(400, 409))
def secret_create(body: SecretCreateIn, _: Client, commands: Secrets) -> IdOut:
    return IdOut(id=commands.create(body.name, body.decoded(), body.labels))


@router.get("/secrets/{ref}", response_model=SecretOut, responses=documented(404, 409))
def secret_get(ref: Ref, _: Client, commands: Secrets) -> SecretOut:
    return secret_out(commands.inspect(ref))


@router.delete("/secrets/{ref}", status_code=204, responses=documented(404, 409))
def secret_rm(ref: Ref, _: Client, commands: Secrets) -> None:
    commands.remove([ref])
