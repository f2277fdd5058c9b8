"""What the manager refuses, as domain errors. The API maps each class to an HTTP status in one table
(pyswarm/manager/api/errors.py); nothing in the core knows about HTTP."""

from __future__ import annotations


class ManagerError(Exception):
    """A request the manager refuses; the message is fit to show the user as is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Invalid(ManagerError):
    """The request cannot be carried out as asked (a port conflict with itself, removing the leader, ...)."""


class NotFound(ManagerError):
    """No node or service by that reference."""


class Conflict(ManagerError):
    """A name or port in use, an ambiguous reference, an update out of sequence, an engine already in a swarm."""


class Forbidden(ManagerError):
    """The engine or host is not the one it claims to be (engine ID or pinned SSH key differs)."""


class EngineUnavailable(ManagerError):
    """An engine that a request names cannot be reached or used."""
