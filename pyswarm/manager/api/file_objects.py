"""The bodies of the secret and config routes. A secret's data goes in (base64) and never comes out; a
config's is shown by inspect, as docker shows it."""

# No `from __future__ import annotations`: pydantic and FastAPI read these annotations at run time.
import base64
import binascii
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pyswarm.manager.api.requests import Labels
from pyswarm.model import parse as p
from pyswarm.model.secret import MAX_CONFIG_SIZE, MAX_NAME, MAX_SECRET_SIZE, Config, Kind, Secret, object_data
from pyswarm.model.secret import object_name as checked_name

_NAME = r"^[a-zA-Z0-9]+([a-zA-Z0-9_.-]*[a-zA-Z0-9])?$"
_BASE64 = r"^[A-Za-z0-9+/]*={0,2}$"


def _base64_length(size: int) -> int:
    return (size + 2) // 3 * 4


class _CreateIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: ClassVar[Kind]
    name: str = Field(max_length=MAX_NAME, json_schema_extra={"pattern": _NAME})
    data: str  # base64; each kind bounds it
    labels: Labels

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return checked_name(value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return p.labels(value)

    @field_validator("data")
    @classmethod
    def _data(cls, value: str) -> str:
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("data must be base64 (RFC 4648, with padding)") from None
        object_data(decoded, cls.kind)
        return value

    def decoded(self) -> bytes:
        return base64.b64decode(self.data)


class SecretCreateIn(_CreateIn):
    kind: ClassVar[Kind] = "secret"
    data: str = Field(min_length=1, max_length=_base64_length(MAX_SECRET_SIZE), json_schema_extra={"pattern": _BASE64})


class ConfigCreateIn(_CreateIn):
    kind: ClassVar[Kind] = "config"
    data: str = Field(min_length=1, max_length=_base64_length(MAX_CONFIG_SIZE), json_schema_extra={"pattern": _BASE64})


class SecretOut(BaseModel):
    id: str
    name: str
    labels: dict[str, str]
    driver: str = Field(description="always empty: the manager keeps the data itself")
    created_at: float
    updated_at: float


class ConfigOut(BaseModel):
    id: str
    name: str
    labels: dict[str, str]
    data: str = Field(description="base64")
    created_at: float
    updated_at: float


def secret_out(secret: Secret) -> SecretOut:
    return SecretOut(
        id=secret.id,
        name=secret.name,
        labels=dict(secret.labels),
        driver="",
        created_at=secret.created_at,
        updated_at=secret.updated_at,
    )


def config_out(config: Config) -> ConfigOut:
    return ConfigOut(
        id=config.id,
        name=config.name,
        labels=dict(config.labels),
        data=base64.b64encode(config.data).decode("ascii"),
        created_at=config.created_at,
        updated_at=config.updated_at,
    )
