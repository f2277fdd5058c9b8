"""Images on an engine: what it holds, pulls from a registry, and `docker save` / `docker load` streams.

`ImageEngine` is the images' part of the Engine protocol (drivers/engine.py); `DockerImages` gives it to
DockerEngine through docker-py's APIClient. Saves and loads are streamed both ways, a piece at a time, over
unix://, tcp:// and ssh:// alike: an image is never held whole in memory (docker-py's load_image and get_image
would do, or would give no timeout of ours).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol
from urllib.parse import quote

import docker
import docker.auth
import docker.errors
import requests
import requests.exceptions
import urllib3.exceptions

from pyswarm.drivers.errors import EngineError, EngineUnreachable, ImageNotFound, RegistryUnreachable
from pyswarm.model.images import ImageInfo, parse_image_ref

# Bytes per piece of a load's body. paramiko's sendall copies what is left of a piece for every SSH packet it
# sends (~32 KiB), so big pieces cost quadratically; small ones cost a call each.
PIECE = 256 * 1024
CONNECT_TIMEOUT = 30.0  # also how long a send may stall: the engine reads a load's body as it comes
# A pull that gives no answer (or no progress) for this long has no registry to pull from. dockerd itself
# waits out DNS and TCP timeouts to every endpoint it knows, which can take minutes.
PULL_TIMEOUT = 15.0
REGISTRY_TIMEOUT = 5.0  # a digest lookup (service create/update): answered in well under a second, or not at all
# dockerd 20.10 exports a whole image to a temporary directory before the first byte of a save, and unpacks
# a whole load before it answers: minutes for an image of gigabytes on a slow disk.
SAVE_TIMEOUT = 600.0
LOAD_TIMEOUT = 600.0

# How dockerd words a registry it cannot reach (Go's net and http errors, through the distribution client).
_NO_REGISTRY = (
    "dial tcp",
    "no such host",
    "i/o timeout",
    "connection refused",
    "network is unreachable",
    "tls handshake timeout",
    "client.timeout",
    "context deadline exceeded",
    "server misbehaving",
    "connection reset",
    "temporary failure in name resolution",
)


class ImageEngine(Protocol):
    """What the manager asks an engine about images (part of drivers.engine.Engine)."""

    def image(self, ref: str) -> ImageInfo | None:
        """The image ref names on this engine (a name, name@digest or image ID); None if it has none."""
        ...

    def has_image(self, ref: str) -> bool: ...
    def image_ref_digest(self, ref: str) -> str | None:
        """ref's repository digest (`nginx@sha256:...`) from the image's RepoDigests. None if the engine lacks
        the image, or has it without a digest (loaded, or built, rather than pulled)."""
        ...

    def images(self) -> list[ImageInfo]: ...
    def registry_digest(self, ref: str, auth: dict[str, str] | None = None, timeout: float = REGISTRY_TIMEOUT) -> str:
        """The digest the registry gives for ref now (sha256:...). Raises RegistryUnreachable (no answer),
        ImageNotFound (the registry has no such image, or refuses us)."""
        ...

    def pull(
        self, ref: str, auth: dict[str, str] | None = None, timeout: float = PULL_TIMEOUT
    ) -> Iterator[dict[str, Any]]:
        """Pull ref, yielding dockerd's progress messages. Raises RegistryUnreachable when no registry answers
        within timeout, ImageNotFound when it has no such image (docker's message in both)."""
        ...

    def save(self, refs: Sequence[str]) -> Iterator[bytes]:
        """The images as a `docker save` tar stream, in pieces as they come."""
        ...

    def load(self, chunks: Iterable[bytes]) -> list[str]:
        """`docker load` a tar stream, sent as it is read from chunks; what it loaded ("busybox:latest", or an
        image ID for an image saved without a name). A chunks iterator that raises aborts the load: the engine
        drops what it got, and the iterator's exception propagates."""
        ...


class DockerImages:
    """ImageEngine for DockerEngine (which sets api and url)."""

    api: docker.APIClient
    url: str

    def image(self, ref: str) -> ImageInfo | None:
        try:
            data = self._json("get", "/images/{0}/json", ref)
        except ImageNotFound:
            return None
        return ImageInfo(
            id=data.get("Id", ""),
            tags=tuple(data.get("RepoTags") or ()),
            digests=tuple(data.get("RepoDigests") or ()),
            size=int(data.get("Size") or 0),
        )

    def has_image(self, ref: str) -> bool:
        return self.image(ref) is not None

    def image_ref_digest(self, ref: str) -> str | None:
        info = self.image(ref)
        return repo_digest_for(ref, info.digests) if info is not None else None

    def images(self) -> list[ImageInfo]:
        rows = self._json("get", "/images/json")
        return [
            ImageInfo(
                id=row.get("Id", ""),
                tags=tuple(t for t in row.get("RepoTags") or () if t != "<none>:<none>"),
                digests=tuple(d for d in row.get("RepoDigests") or () if d != "<none>@<none>"),
                size=int(row.get("Size") or 0),
            )
            for row in rows
        ]

    def registry_digest(self, ref: str, auth: dict[str, str] | None = None, timeout: float = REGISTRY_TIMEOUT) -> str:
        headers = {"X-Registry-Auth": docker.auth.encode_header(auth)} if auth else {}
        try:
            data = self._json("get", "/distribution/{0}/json", ref, headers=headers, timeout=timeout)
        except _Slow:
            message = f"{self.url}: no answer from the registry of {ref} within {timeout:g} s"
            raise RegistryUnreachable(message) from None
        return str((data.get("Descriptor") or {}).get("digest", ""))

    def pull(
        self, ref: str, auth: dict[str, str] | None = None, timeout: float = PULL_TIMEOUT
    ) -> Iterator[dict[str, Any]]:
        parsed = parse_image_ref(ref)
        if parsed.is_id:
            raise ImageNotFound(f"No such image: {ref} (an image ID cannot be pulled)")
        params = {"fromImage": parsed.repository, "tag": parsed.digest or parsed.tag or "latest"}
        headers = {"X-Registry-Auth": docker.auth.encode_header(auth)} if auth else {}
        try:
            response = self._open("post", "/images/create", params=params, headers=headers, timeout=timeout)
            try:
                for message in _messages(response):
                    if message.get("error"):
                        raise _pull_error(self.url, str(message["error"]))
                    yield message
            finally:
                response.close()
        except (_Slow, requests.exceptions.RequestException, OSError) as exc:
            if _timed_out(exc):
                raise RegistryUnreachable(
                    f"{self.url}: pulling {ref}: no answer from its registry within {timeout:g} s"
                ) from None
            raise _unreachable(exc, self.url) from None

    def save(self, refs: Sequence[str]) -> Iterator[bytes]:
        try:
            response = self._open("get", "/images/get", params={"names": list(refs)}, timeout=SAVE_TIMEOUT)
            try:
                yield from response.iter_content(PIECE)
            finally:
                response.close()  # also when the reader stops early: the connection goes, not back to the pool
        except (_Slow, requests.exceptions.RequestException, OSError) as exc:
            if _timed_out(exc):
                raise EngineError(f"{self.url}: saving {', '.join(refs)}: no data for {SAVE_TIMEOUT:g} s") from None
            raise _unreachable(exc, self.url) from None

    def load(self, chunks: Iterable[bytes]) -> list[str]:
        loaded = []
        try:
            response = self._open(
                "post",
                "/images/load",
                params={"quiet": "1"},
                data=_pieces(chunks),
                headers={"Content-Type": "application/x-tar"},
                timeout=LOAD_TIMEOUT,
                translate=_load_error,
            )
            with response:
                for message in _messages(response):
                    if message.get("error"):
                        raise EngineError(f"{self.url}: loading the image failed: {message['error']}")
                    for line in str(message.get("stream", "")).splitlines():
                        name = line.removeprefix("Loaded image: ").removeprefix("Loaded image ID: ")
                        if name != line:
                            loaded.append(name.strip())
        except (_Slow, requests.exceptions.RequestException, OSError) as exc:
            if _timed_out(exc):
                raise EngineError(f"{self.url}: the engine did not finish loading within {LOAD_TIMEOUT:g} s") from None
            raise _unreachable(exc, self.url) from None
        return loaded

    # --- requests -------------------------------------------------------------------------------------------

    def _open(self, method: str, path: str, timeout: float, translate: Any = None, **kwargs: Any) -> requests.Response:
        """A streamed request with our timeouts (connect and sends, then each read). docker-py's public calls
        cannot stream a request body, nor take a timeout per call."""
        send = self.api._post if method == "post" else self.api._get
        try:
            response: requests.Response = send(
                self.api._url(path), stream=True, timeout=(CONNECT_TIMEOUT, timeout), **kwargs
            )
            try:
                self.api._raise_for_status(response)
            except docker.errors.APIError as exc:
                response.close()
                raise (translate or _api_error)(exc, self.url) from None
        except requests.exceptions.ReadTimeout:
            raise _Slow() from None
        except Exception as exc:  # paramiko's SSHException and friends when the transport dies
            if type(exc).__module__.startswith("paramiko"):
                raise EngineUnreachable(f"{self.url}: {exc}") from None
            raise
        return response

    def _json(self, method: str, path: str, *args: str, timeout: float = 30.0, **kwargs: Any) -> Any:
        try:
            with self._open(method, path.format(*(_quote(a) for a in args)), timeout, **kwargs) as response:
                return response.json()
        except (requests.exceptions.RequestException, OSError, ValueError) as exc:
            if _timed_out(exc):
                raise _Slow() from None
            raise _unreachable(exc, self.url) from None


class _Slow(Exception):
    """The engine took longer than the call's timeout to answer (or to send the next piece)."""


def repo_digest_for(ref: str, digests: Iterable[str]) -> str | None:
    """The repository digest among an image's that belongs to ref's repository (an image can be in several)."""
    wanted = parse_image_ref(ref)
    for candidate in digests:
        try:
            if parse_image_ref(candidate).same_repository(wanted):
                return candidate
        except ValueError:
            continue
    return None


def no_registry(message: str) -> bool:
    """Whether dockerd's error says the registry could not be reached at all."""
    lowered = message.lower()
    return any(sign in lowered for sign in _NO_REGISTRY)


def _quote(value: str) -> str:
    return quote(value, safe="/:")


def _pieces(chunks: Iterable[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        for start in range(0, len(chunk), PIECE):
            yield bytes(chunk[start : start + PIECE])


def _messages(response: requests.Response) -> Iterator[dict[str, Any]]:
    """dockerd's JSON progress stream, one message at a time."""
    for line in response.iter_lines(chunk_size=8192):
        if line.strip():
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                yield message


def _pull_error(url: str, message: str) -> EngineError:
    if no_registry(message):
        return RegistryUnreachable(f"{url}: {message}")
    lowered = message.lower()
    if any(s in lowered for s in ("not found", "manifest unknown", "does not exist", "denied", "unauthorized")):
        return ImageNotFound(message)
    return EngineError(f"{url}: {message}")


def _api_error(exc: docker.errors.APIError, url: str) -> EngineError:
    explanation = exc.explanation or str(exc)
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    if exc.status_code == 404:
        return ImageNotFound(str(explanation))
    return _pull_error(url, str(explanation))


def _load_error(exc: docker.errors.APIError, url: str) -> EngineError:
    explanation = exc.explanation or str(exc)
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    return EngineError(f"{url}: loading the image failed: {explanation}")


def _timed_out(exc: BaseException) -> bool:
    """A read that waited longer than its timeout: before the answer (ReadTimeout), or within a stream, where
    requests reports urllib3's ReadTimeoutError as a ConnectionError."""
    if isinstance(exc, _Slow | requests.exceptions.ReadTimeout | TimeoutError):
        return True
    cause = exc.args[0] if exc.args else None
    return isinstance(cause, urllib3.exceptions.ReadTimeoutError | TimeoutError)


def _unreachable(exc: BaseException, url: str) -> EngineUnreachable:
    return EngineUnreachable(f"{url}: {type(exc).__name__}: {exc}")
