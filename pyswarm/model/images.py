"""Image references, as docker reads them, and what an engine says about an image it holds.

`parse_image_ref("nginx")` is docker.io/library/nginx, tag latest implied: `familiar` names it the way docker
prints it ("nginx"), `tagged` with its tag ("nginx:latest"), `pinned(digest)` the way swarm pins a service's
image ("nginx:latest@sha256:..."). An image ID ("sha256:<64 hex>") is a reference too (`is_id`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

DEFAULT_DOMAIN = "docker.io"
# docker/distribution's reference grammar (reference/regexp.go), without the parts docker itself refuses.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*(?::[0-9]+)?"
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_DOMAIN_RE = re.compile(_DOMAIN)
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}")
_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class ImageRef:
    domain: str  # the registry: docker.io unless the name starts with a host
    path: str  # library/nginx
    tag: str = ""  # "" when none was given (latest is implied unless there is a digest)
    digest: str = ""  # sha256:...
    is_id: bool = False  # an image ID: no registry, no name

    @property
    def repository(self) -> str:
        """The name as docker prints it: nginx, not docker.io/library/nginx."""
        if self.is_id:
            return ""
        if self.domain != DEFAULT_DOMAIN:
            return f"{self.domain}/{self.path}"
        return self.path.removeprefix("library/")

    @property
    def tagged(self) -> str:
        """The name with its tag, latest when none was given (an ID or a digest-only reference as is)."""
        if self.is_id:
            return self.digest
        if self.digest and not self.tag:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag or 'latest'}"

    @property
    def familiar(self) -> str:
        """The whole reference as docker prints it."""
        if self.is_id:
            return self.digest
        return self.repository + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def pinned(self, digest: str) -> str:
        """The reference pinned to a digest, keeping the tag for the reader: nginx:latest@sha256:..."""
        return f"{self.repository}:{self.tag or 'latest'}@{digest}"

    def same_repository(self, other: ImageRef) -> bool:
        return not self.is_id and (self.domain, self.path) == (other.domain, other.path)


def parse_image_ref(ref: str) -> ImageRef:
    """Split a reference into registry, path, tag and digest; ValueError if docker would refuse it."""
    if _IMAGE_ID.fullmatch(ref):
        return ImageRef(domain="", path="", digest=ref, is_id=True)
    name, _, digest = ref.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        raise ValueError(f"invalid image reference {ref[:200]!r}: bad digest")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = ""
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise ValueError(f"invalid image reference {ref[:200]!r}: bad tag")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost") and _DOMAIN_RE.fullmatch(first):
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    if not _PATH.fullmatch(path) or len(ref) > 4096:
        raise ValueError(f"invalid image reference {ref[:200]!r}: expected [registry/]name[:tag][@digest]")
    return ImageRef(domain=domain, path=path, tag=tag, digest=digest)


@dataclass(frozen=True)
class ImageInfo:
    """An image as an engine lists it: its ID, the names it goes by, and its size in bytes."""

    id: str  # sha256:...
    tags: tuple[str, ...] = ()  # nginx:latest
    digests: tuple[str, ...] = ()  # repository digests, nginx@sha256:...: only images that came from a registry
    size: int = 0


_AUTH_KEYS = {"username", "password", "serveraddress", "email", "identitytoken", "registrytoken", "auth"}


def registry_auth_from_header(text: str) -> dict[str, str]:
    """An X-Registry-Auth header (base64 of docker's AuthConfig JSON) as a dict; ValueError when malformed.
    The message never quotes the value."""
    try:
        padded = text + "=" * (-len(text) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValueError("X-Registry-Auth is not base64 of a JSON object") from None
    if not isinstance(data, dict) or not set(data) <= _AUTH_KEYS:
        raise ValueError(f"X-Registry-Auth holds other keys than {sorted(_AUTH_KEYS)}")
    if not all(isinstance(value, str) and len(value) <= 4096 and "\x00" not in value for value in data.values()):
        raise ValueError("X-Registry-Auth's values are strings of at most 4096 characters")
    return {key: value for key, value in data.items() if value}
