"""Images for the in-memory engine (MemoryEngine): the same ImageEngine calls, with a fake registry.

An engine's images are the references in `state.images` (MemoryEngine.run checks them). A registry is a dict
shared by the engines that can reach it (`image_store.registry`: tagged reference -> digest); None, the
default, is an engine that reaches none, as in the lab. A save is a small stream of pieces that a load parses
back (names, IDs and an end mark, so a cut stream fails to load as it does on a real engine).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyswarm.drivers.errors import EngineError, EngineUnreachable, ImageNotFound, RegistryUnreachable
from pyswarm.drivers.images import PULL_TIMEOUT, REGISTRY_TIMEOUT
from pyswarm.model.images import ImageInfo, ImageRef, parse_image_ref

if TYPE_CHECKING:
    from pyswarm.drivers.memory_engine import MemoryEngineState

MAGIC = b"PYSWARM-MEMORY-IMAGE\n"
END = b"\nEND-OF-IMAGE\n"


@dataclass
class MemoryImageStore:
    """What a MemoryEngine knows about its images beyond their names, and its view of a registry."""

    registry: dict[str, str] | None = None  # tagged ref -> digest, shared between engines; None: unreachable
    registry_auth: dict[str, str] | None = None  # the credentials the registry wants, if any
    ids: dict[str, str] = field(default_factory=dict)  # tagged ref -> image ID (default: derived from the name)
    digests: dict[str, str] = field(default_factory=dict)  # tagged ref -> repository digest (pulled images)
    pulls: list[str] = field(default_factory=list)  # what was pulled, in order
    loads: list[list[str]] = field(default_factory=list)  # what each load brought
    filler: int = 4  # pieces of padding per saved image, so that a save is a stream of several pieces
    piece_size: int = 1024  # bytes per piece of padding
    piece_delay: float = 0.0  # seconds a load takes per piece (a slow node)
    fail_loads: int = 0  # make the next N loads fail, as a full disk would


def memory_image_id(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


class MemoryImages:
    """ImageEngine for MemoryEngine (which sets url and state)."""

    url: str
    state: MemoryEngineState

    @functools.cached_property
    def image_store(self) -> MemoryImageStore:
        return MemoryImageStore()

    def image(self, ref: str) -> ImageInfo | None:
        self._images_up()
        try:
            parsed = parse_image_ref(ref)
        except ValueError:
            return None
        for tagged in self._names():
            image_id = self._id(tagged)
            digest = self.image_store.digests.get(tagged, "")
            if parsed.is_id:
                found = image_id == parsed.digest
            elif parsed.digest:
                found = digest == f"{parsed.repository}@{parsed.digest}"
            else:
                found = tagged == parsed.tagged
            if found:
                return ImageInfo(id=image_id, tags=(tagged,) if ":" in tagged else (), digests=(digest,) * bool(digest))
        if parsed.is_id and ref in self.state.images:
            return ImageInfo(id=ref)
        return None

    def has_image(self, ref: str) -> bool:
        return self.image(ref) is not None

    def image_ref_digest(self, ref: str) -> str | None:
        info = self.image(ref)
        return info.digests[0] if info is not None and info.digests else None

    def images(self) -> list[ImageInfo]:
        self._images_up()
        by_id: dict[str, list[str]] = {}
        for tagged in self._names():
            by_id.setdefault(self._id(tagged), []).append(tagged)
        for ref in self.state.images:
            if ref.startswith("sha256:"):
                by_id.setdefault(ref, [])
        return [ImageInfo(id=image_id, tags=tuple(sorted(tags))) for image_id, tags in sorted(by_id.items())]

    def registry_digest(self, ref: str, auth: dict[str, str] | None = None, timeout: float = REGISTRY_TIMEOUT) -> str:
        self._images_up()
        return self._registry_lookup(parse_image_ref(ref), auth)

    def pull(
        self, ref: str, auth: dict[str, str] | None = None, timeout: float = PULL_TIMEOUT
    ) -> Iterator[dict[str, Any]]:
        self._images_up()
        parsed = parse_image_ref(ref)
        digest = self._registry_lookup(parsed, auth)
        yield {"status": f"Pulling from {parsed.path}", "id": parsed.tag or "latest"}
        yield {"status": "Downloading", "id": "layer", "progressDetail": {"current": 512, "total": 1024}}
        tagged = parsed.tagged if not parsed.digest else f"{parsed.repository}:{parsed.tag or 'latest'}"
        store = self.image_store
        store.ids[tagged] = memory_image_id(digest)
        store.digests[tagged] = f"{parsed.repository}@{digest}"
        self.state.images.add(tagged)
        self.state.images.add(ref)  # MemoryEngine.run looks the spec's image up as it is written
        store.pulls.append(ref)
        yield {"status": f"Digest: {digest}"}
        yield {"status": f"Status: Downloaded newer image for {parsed.familiar}"}

    def save(self, refs: Sequence[str]) -> Iterator[bytes]:
        self._images_up()
        entries = []
        for ref in refs:
            info = self.image(ref)
            if info is None:
                raise ImageNotFound(f"reference does not exist: {ref}")
            named = not parse_image_ref(ref).is_id and not parse_image_ref(ref).digest
            entries.append({"id": info.id, "tags": [parse_image_ref(ref).tagged] if named else []})
        yield MAGIC + json.dumps(entries).encode() + b"\n"
        for _ in range(self.image_store.filler * len(entries)):
            self._images_up()
            yield b"\0" * self.image_store.piece_size
        yield END

    def load(self, chunks: Iterable[bytes]) -> list[str]:
        self._images_up()
        store = self.image_store
        head, tail = b"", b""
        for chunk in chunks:
            if len(head) < 65536:
                head += chunk[: 65536 - len(head)]
            tail = (tail + chunk)[-len(END) :]
            if store.piece_delay:
                time.sleep(store.piece_delay)
            self._images_up()
        if store.fail_loads > 0:
            store.fail_loads -= 1
            raise EngineError(f"{self.url}: loading the image failed: no space left on device (injected)")
        if not head.startswith(MAGIC) or tail != END:
            raise EngineError(f"{self.url}: loading the image failed: unexpected EOF")
        entries = json.loads(head[len(MAGIC) :].split(b"\n", 1)[0])
        loaded: list[str] = []
        for entry in entries:
            for tagged in entry["tags"]:
                store.ids[tagged] = entry["id"]
                store.digests.pop(tagged, None)  # a loaded image has no repository digest
                self.state.images.add(tagged)
            if not entry["tags"]:
                self.state.images.add(entry["id"])
            loaded += entry["tags"] or [entry["id"]]
        store.loads.append(loaded)
        return loaded

    def _names(self) -> list[str]:
        """The engine's images by tagged name (refs held as written, "nginx" or "nginx:latest", folded)."""
        names = set()
        for ref in list(self.state.images):
            if ref.startswith("sha256:") or "@" in ref:
                continue
            try:
                names.add(parse_image_ref(ref).tagged)
            except ValueError:
                continue
        return sorted(names)

    def _id(self, tagged: str) -> str:
        return self.image_store.ids.get(tagged) or memory_image_id(tagged)

    def _registry_lookup(self, parsed: ImageRef, auth: dict[str, str] | None) -> str:
        store = self.image_store
        if store.registry is None:
            host = "registry-1.docker.io" if parsed.domain == "docker.io" else parsed.domain
            raise RegistryUnreachable(f'{self.url}: Get "https://{host}/v2/": dial tcp: lookup {host}: no such host')
        denied = f"pull access denied for {parsed.repository}, repository does not exist or may require 'docker login'"
        if store.registry_auth is not None and auth != store.registry_auth:
            raise ImageNotFound(denied)
        if parsed.digest:
            wanted = f"{parsed.repository}:"
            if any(k.startswith(wanted) and v == parsed.digest for k, v in store.registry.items()):
                return parsed.digest
            raise ImageNotFound(f"manifest for {parsed.familiar} not found: manifest unknown")
        digest = store.registry.get(parsed.tagged)
        if digest is None:
            raise ImageNotFound(denied)
        return digest

    def _images_up(self) -> None:
        if self.state.down:
            raise EngineUnreachable(f"{self.url}: unreachable (simulated)")
