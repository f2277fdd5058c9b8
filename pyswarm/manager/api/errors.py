"""What the API answers when the manager refuses: domain errors mapped to HTTP statuses, in one table, and
the documented refusals of each route. Every refusal is `{"detail": "<message>"}` and leaves the state as
it was."""

from typing import Any

from pydantic import BaseModel, Field

from pyswarm.manager.errors import Conflict, EngineUnavailable, Forbidden, Invalid, ManagerError, NotFound
from pyswarm.model.parse import SpecError

# An engine that a request names and that cannot be reached or used (or whose SSH host key cannot be checked)
# is a problem with that input: a 4xx, not a 5xx of the manager.
STATUS: dict[type[Exception], int] = {
    Invalid: 400,
    SpecError: 400,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    EngineUnavailable: 422,
}


def status_of(exc: ManagerError | SpecError) -> int:
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500


class ErrorOut(BaseModel):
    detail: str = Field(description="what was refused and why, fit to show the user as is")


_ERROR_TEXT = {
    400: "the request is refused (e.g. a port conflict, a reserved port, removing the leader)",
    401: "missing or invalid token",
    403: "the token may not do this (e.g. a join token on anything but join)",
    404: "no such node or service",
    409: "conflict: a name or port in use, an ambiguous reference, or an update out of sequence",
    422: "invalid input: a malformed field, or an engine that cannot be reached or used",
}


def documented(*codes: int, plain_route: bool = False) -> dict[int | str, dict[str, Any]]:
    """The documented refusals of a route: these codes, plus 401, 403 and 422 that every route may answer.

    FastAPI documents a `model` under the route's own media type; a text/plain route (logs) names the
    JSON schema itself, so that its errors are documented as the JSON they are."""
    codes_documented = sorted({401, 403, 422, *codes})
    if plain_route:
        content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
        return {code: {"description": _ERROR_TEXT[code], "content": content} for code in codes_documented}
    return {code: {"model": ErrorOut, "description": _ERROR_TEXT[code]} for code in codes_documented}


def validation_message(errors: list[Any]) -> str:
    """One line per problem, naming the field; never the submitted value (it may be a secret)."""
    messages = []
    for error in errors:
        loc = [str(x) for x in error.get("loc", ())]
        kind = error.get("type", "")
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if loc[:1] == ["body"] and kind == "json_invalid":
            messages.append("the request body is not valid JSON")
            continue
        where = ".".join(loc[1:]) if loc[:1] in (["body"], ["query"], ["path"], ["header"]) else ".".join(loc)
        if not where and loc[:1] == ["body"]:
            if kind in ("model_attributes_type", "dict_type"):
                messages.append("the request body must be a JSON object, sent as application/json")
                continue
            where = "request body"
        messages.append(f"{where}: {message}" if where else message)
    return "; ".join(messages)[:2000]
