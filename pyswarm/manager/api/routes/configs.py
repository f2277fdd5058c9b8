"""Configs: create, list, inspect, remove. Inspect shows the data (base64), as docker does."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from pyswarm.manager.api.auth import Client, manager_of
from pyswarm.manager.api.errors import documented
from pyswarm.manager.api.file_objects import ConfigCreateIn, ConfigOut, config_out
from pyswarm.manager.api.responses import IdOut
from pyswarm.manager.api.routes.nodes import Ref
from pyswarm.manager.secrets import ConfigCommands


def _configs(request: Request) -> ConfigCommands:
    return manager_of(request).configs


Configs = Annotated[ConfigCommands, Depends(_configs)]

router = APIRouter()


@router.get("/configs", response_model=list[ConfigOut], responses=documented())
def configs(_: Client, commands: Configs) -> list[ConfigOut]:
    return [config_out(c) for c in commands.list()]


@router.post("/configs", response_model=IdOut, status_code=201, responses=documented(400, 409))
def config_create(body: ConfigCreateIn, _: Client, commands: Configs) -> IdOut:
    return IdOut(id=commands.create(body.name, body.decoded(), body.labels))


@router.get("/configs/{ref}", response_model=ConfigOut, responses=documented(404, 409))
def config_get(ref: Ref, _: Client, commands: Configs) -> ConfigOut:
    return config_out(commands.inspect(ref))


@router.delete("/configs/{ref}", status_code=204, responses=documented(404, 409))
def config_rm(ref: Ref, _: Client, commands: Configs) -> None:
    commands.remove([ref])
