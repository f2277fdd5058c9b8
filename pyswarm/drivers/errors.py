"""What the Docker Engine seam raises (drivers/engine.py re-exports them, where callers have always found them)."""

from __future__ import annotations


class EngineError(Exception):
    """An engine refused or failed a request."""


class EngineUnreachable(EngineError):
    """The engine did not answer: the node is down or cut off."""


class EngineHostUnreachable(EngineUnreachable):
    """The engine's host accepts no TCP connection at all: off the network or powered off, not merely busy.
    A kernel answers a connect whatever its processes' load, so this is a stronger sign than a slow reply."""


class ImageNotFound(EngineError):
    """The image is not present on the engine (and no registry can be reached)."""


class RegistryUnreachable(EngineError):
    """A pull or a digest lookup got no answer from the image's registry (no network to it, no DNS, too slow).
    The engine itself answered: the node is fine."""
