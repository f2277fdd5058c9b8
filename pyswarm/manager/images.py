"""Images for the nodes, with or without a registry.

- `ensure(node, ref)`: a task's start found its image missing on the node. The node pulls it; when no registry
  answers (the lab, an air-gapped site), it gets it from a node that has it, streamed engine to engine through
  the manager (the source's save feeds the target's load a piece at a time). Each (node, image) is fed once:
  other starts that want it meanwhile wait for that one.
- `fan_out(chunks, nodes)`: one image stream (`pyswarm image push`) fed to several nodes' loads at once, each
  through its own bounded queue. The slowest node sets the pace; one that fails or stalls is dropped, and the
  others go on.
- `resolve(ref)`: the digest to pin a service's tag to, as swarm does, or docker's warning when none is known.

Engine I/O only, never under the state lock: the lock is held just to read which nodes are ready. Bulk streams
get engine clients of their own, so a long load shares no connection with the node's starts and removals.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pyswarm.drivers.engine import Engine, EngineError, EngineUnreachable, ImageNotFound
from pyswarm.drivers.errors import RegistryUnreachable
from pyswarm.manager.errors import Invalid
from pyswarm.manager.image_feeds import Feed, FeedResult, fan_out
from pyswarm.manager.links import EngineConnector, NodeLink, NodeLinks
from pyswarm.manager.settings import NO_PULL_RETRY, PULL_ANSWER_TIMEOUT, RESOLVE_TIMEOUT
from pyswarm.manager.state import ClusterState
from pyswarm.model import Service
from pyswarm.model.images import ImageInfo, ImageRef, parse_image_ref

log = logging.getLogger("pyswarm.manager")

Progress = Callable[[str], None]
Auth = dict[str, str] | None

# docker's own words (cli/command/service/trust.go), with the reference it could not pin.
UNPINNED_WARNING = (
    "image {ref} could not be accessed on a registry to record its digest. Each node will access {ref} "
    "independently, possibly leading to different nodes running different versions of the image."
)
PROGRESS_EVERY = 1.0  # seconds between progress messages of one fetch
SOURCE_ATTEMPTS = 2  # nodes tried as the source of an image before giving up
LIST_THREADS = 16
RESOLVE_NODES = 8  # nodes asked for a digest they hold, when the registry does not answer


@dataclass
class NodeImages:
    node_id: str
    hostname: str
    images: list[ImageInfo] = field(default_factory=list)
    error: str = ""


class _Fetch:
    """One node getting one image; later callers for the same pair wait for its result."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.run_ref = ""
        self.error: Exception | None = None
        self.message = ""
        self.listeners: list[Progress] = []

    def report(self, message: str) -> None:
        self.message = message
        for listener in list(self.listeners):
            with contextlib.suppress(Exception):
                listener(message)


class ImageDistributor:
    def __init__(self, state: ClusterState, links: NodeLinks, connector: EngineConnector) -> None:
        self.state = state
        self.links = links
        self.connector = connector
        # The registry credentials a service's pulls send (--with-registry-auth); set by the wiring.
        self.registry_auth: Callable[[Service], Auth] = lambda service: None
        self._lock = threading.Lock()
        self._fetches: dict[tuple[str, str], _Fetch] = {}
        self._no_pull: dict[str, tuple[float, str]] = {}  # registry or ref -> (until when, why)
        self._holders: dict[str, set[str]] = {}  # ref -> nodes seen holding it (tried first as sources)
        self._serving: Counter[str] = Counter()  # node -> streams it is the source of now
        self._run_refs: dict[tuple[str, str], str] = {}  # (node, pinned ref) -> image ID it was loaded as

    # --- a task's image, on its node ----------------------------------------------------------------------

    def ensure(self, node_id: str, ref: str, auth: Auth = None, progress: Progress | None = None) -> str:
        """Get ref onto the node: pulled, else streamed from a node that has it. Returns the reference to run
        it by on that node: ref, or the image ID when a digest-pinned image came from a node (a loaded image
        has no repository digest). Raises ImageNotFound (no registry has it and no node has it, with why),
        EngineUnreachable (the node's engine did not answer)."""
        key = (node_id, ref)
        with self._lock:
            fetch = self._fetches.get(key)
            owner = fetch is None
            if fetch is None:
                fetch = self._fetches[key] = _Fetch()
            if progress is not None:
                fetch.listeners.append(progress)
        if not owner:
            if fetch.message and progress is not None:
                progress(fetch.message)
            fetch.done.wait()
            if fetch.error is not None:
                raise type(fetch.error)(*fetch.error.args)  # a copy: each waiter's traceback is its own
            return fetch.run_ref
        try:
            fetch.run_ref = self._fetch(node_id, ref, auth, fetch.report)
        except Exception as exc:
            fetch.error = exc
            raise
        finally:
            with self._lock:
                del self._fetches[key]
            fetch.done.set()
        return fetch.run_ref

    def _fetch(self, node_id: str, ref: str, auth: Auth, report: Progress) -> str:
        try:
            parse_image_ref(ref)
        except ValueError as exc:
            raise ImageNotFound(f"No such image: {ref}: {exc}") from None
        target = self.connector.engine(self._link(node_id))
        known = self._run_refs.get((node_id, ref))
        if known and target.has_image(known):
            return known
        if target.has_image(ref):  # a start that failed before this one's fetch ended
            return ref
        why_not_pulled = self._pull(target, ref, auth, report)
        if why_not_pulled is None:
            self._held(ref, node_id)
            return ref
        return self._from_node(node_id, ref, report, why_not_pulled)

    def _pull(self, target: Engine, ref: str, auth: Auth, report: Progress) -> str | None:
        """None once pulled; else why it was not (no registry answered, or none has the image)."""
        parsed = parse_image_ref(ref)
        skipped = self._pull_skipped(parsed, auth)
        if skipped:
            return skipped
        report(f"pulling image {ref}")
        throttle = _Throttle(report)
        try:
            for message in target.pull(ref, auth, PULL_ANSWER_TIMEOUT):
                throttle.pull_progress(ref, message)
        except EngineUnreachable:
            raise
        except RegistryUnreachable as exc:
            self._skip_pulls(parsed.domain, str(exc))
            return str(exc)
        except ImageNotFound as exc:
            self._skip_pulls(_refused_key(parsed, auth), str(exc))
            return str(exc)
        except EngineError as exc:  # a refusal of another kind (disk full, bad platform): a node may have it
            return str(exc)
        return None

    def _from_node(self, node_id: str, ref: str, report: Progress, why_not_pulled: str) -> str:
        """Stream the image from a node that has it; the reference to run it by on the target."""
        pinned = bool(parse_image_ref(ref).digest)
        tried: set[str] = {node_id}
        for _ in range(SOURCE_ATTEMPTS):
            found = self._find_source(ref, tried)
            if found is None:
                break
            source_id, hostname, image_id = found
            tried.add(source_id)
            run_ref = image_id if pinned else ref
            report(f"receiving image {ref} from {hostname}")
            try:
                self._copy(source_id, node_id, [run_ref], _Throttle(report).bytes_progress(ref, hostname))
            except _SourceFailed as exc:
                log.warning("image %s from %s to node %s: the source failed: %s", ref, hostname, node_id[:12], exc)
                continue
            if pinned:
                self._run_refs[(node_id, ref)] = image_id
            self._held(ref, node_id)
            return run_ref
        raise ImageNotFound(f"No such image: {ref}: no node has it, and the node could not pull it: {why_not_pulled}")

    def _find_source(self, ref: str, exclude: set[str]) -> tuple[str, str, str] | None:
        """A ready node that has the image: (node ID, hostname, image ID). Nodes known to hold it come first,
        the least busy serving others first."""
        with self.state.lock:
            candidates = [(n.id, n.hostname) for n in self.state.nodes.values() if n.ready and n.id not in exclude]
        holders = self._holders.get(_key(ref), set())
        random.shuffle(candidates)
        candidates.sort(key=lambda c: (c[0] not in holders, self._serving[c[0]]))
        for candidate_id, hostname in candidates:
            link = self.links.get(candidate_id)
            if link is None:
                continue
            try:
                info = self.connector.engine(link).image(ref)
            except EngineError:
                continue
            if info is not None:
                return candidate_id, hostname, info.id
        return None

    def _copy(self, source_id: str, target_id: str, refs: list[str], counted: Callable[[int], None]) -> None:
        """The source's save into the target's load, a piece at a time, each over a connection of its own.
        _SourceFailed when the source is at fault (another node may serve), else the target's error."""
        try:
            source = self._bulk_engine(source_id)
        except EngineError as exc:
            raise _SourceFailed(str(exc)) from None
        try:
            target = self._bulk_engine(target_id)
        except BaseException:
            source.close()
            raise
        failed: list[Exception] = []

        def pieces() -> Generator[bytes, None, None]:
            try:
                for piece in source.save(refs):
                    counted(len(piece))
                    yield piece
            except Exception as exc:
                failed.append(exc)
                raise

        stream = pieces()
        with self._lock:
            self._serving[source_id] += 1
        try:
            target.load(stream)
        except Exception as exc:
            if failed:
                raise _SourceFailed(str(failed[0])) from None
            if isinstance(exc, EngineUnreachable | ImageNotFound):
                raise
            raise EngineError(str(exc)) from None
        finally:
            stream.close()
            with self._lock:
                self._serving[source_id] -= 1
            source.close()
            target.close()

    # --- pinning a service's image --------------------------------------------------------------------------

    def resolve(self, ref: str, auth: Auth = None) -> tuple[str, str | None]:
        """The reference to give a service's tasks, and a warning for the user (or None). A tag is pinned to a
        digest, as swarm does: the registry's, asked through a node's engine; else one a node holds from a
        registry. Without either (images loaded without a registry have no digest), the tag stays, with
        docker's warning. Engine I/O: never call it with the state lock held. Raises Invalid (bad reference)."""
        try:
            parsed = parse_image_ref(ref)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if parsed.digest or parsed.is_id:
            return ref, None
        engines = self._ready_engines(RESOLVE_NODES)
        digest = self._registry_digest(parsed, ref, auth, engines[:1])
        if digest is None:
            digest = self._local_digest(ref, engines)
        if digest is None:
            return ref, UNPINNED_WARNING.format(ref=parsed.tagged)
        return parsed.pinned(digest), None

    def _registry_digest(self, parsed: ImageRef, ref: str, auth: Auth, engines: list[Engine]) -> str | None:
        if self._pull_skipped(parsed, auth):
            return None
        for engine in engines:
            try:
                return engine.registry_digest(ref, auth, RESOLVE_TIMEOUT) or None
            except RegistryUnreachable as exc:
                self._skip_pulls(parsed.domain, str(exc))
            except EngineError:
                continue
        return None

    def _local_digest(self, ref: str, engines: list[Engine]) -> str | None:
        for engine in engines:
            try:
                repo_digest = engine.image_ref_digest(ref)
            except EngineError:
                continue
            if repo_digest:
                return repo_digest.partition("@")[2]
        return None

    # --- one stream to many nodes ---------------------------------------------------------------------------

    def targets(self, refs: Sequence[str] | None) -> list[str]:
        """The nodes a pushed image goes to: those named (ID, hostname or ID prefix), or every ready node.
        Raises NotFound or Conflict for a bad name, Invalid when no node is ready."""
        if refs:
            return list(dict.fromkeys(self.state.find_node(ref).id for ref in refs))
        with self.state.lock:
            ready = [n.id for n in self.state.nodes.values() if n.ready]
        if not ready:
            raise Invalid("no node is ready to receive the image")
        return ready

    def fan_out(self, chunks: Iterable[bytes], node_ids: Sequence[str]) -> list[FeedResult]:
        """Feed one `docker save` stream to the nodes' loads at once (image_feeds.py); one result per node."""
        results = fan_out([self._feed(node_id) for node_id in node_ids], chunks)
        for result in results:
            if not result.error:
                for name in result.loaded:
                    self._held(name, result.node_id)
        return results

    def _feed(self, node_id: str) -> Feed:
        node = self.state.nodes.get(node_id)
        result = FeedResult(node_id, node.hostname if node else node_id[:12])
        if node is None or not node.ready:
            result.error = "the node is not ready (down or left)"
            return Feed(result, None)
        # Connected in the feed's own thread: the nodes' SSH handshakes overlap, and the upload starts at once.
        return Feed(result, lambda: self._bulk_engine(node_id))

    # --- what the nodes hold ---------------------------------------------------------------------------------

    def node_images(self) -> list[NodeImages]:
        """Every node's images (one engine call per node, in parallel); a node that does not answer says why."""
        with self.state.lock:
            nodes = [(n.id, n.hostname, n.ready) for n in self.state.nodes.values()]

        def one(node: tuple[str, str, bool]) -> NodeImages:
            node_id, hostname, ready = node
            listing = NodeImages(node_id, hostname)
            link = self.links.get(node_id)
            if not ready or link is None:
                listing.error = "the node is not ready"
                return listing
            try:
                listing.images = self.connector.engine(link).images()
            except EngineError as exc:
                listing.error = str(exc)
            return listing

        with ThreadPoolExecutor(max_workers=max(1, min(LIST_THREADS, len(nodes)))) as pool:
            return list(pool.map(one, nodes))

    # --- helpers ------------------------------------------------------------------------------------------------

    def _link(self, node_id: str) -> NodeLink:
        link = self.links.get(node_id)
        if link is None or link.stop.is_set():
            raise EngineUnreachable(f"node {node_id[:12]} has no engine link (it left, or is being removed)")
        return link

    def _bulk_engine(self, node_id: str) -> Engine:
        """A client of its own for one long stream (closed after it)."""
        link = self._link(node_id)
        return self.connector.connect(link.url, self.connector.engine_timeout)

    def _ready_engines(self, limit: int) -> list[Engine]:
        with self.state.lock:
            ready = sorted((n.hostname, n.id) for n in self.state.nodes.values() if n.ready)
        engines: list[Engine] = []
        for _, node_id in ready:
            link = self.links.get(node_id)
            if link is not None and len(engines) < limit:
                with contextlib.suppress(EngineError):
                    engines.append(self.connector.engine(link))
        return engines

    def _held(self, ref: str, node_id: str) -> None:
        with self._lock:
            self._holders.setdefault(_key(ref), set()).add(node_id)

    def _pull_skipped(self, parsed: ImageRef, auth: Auth) -> str | None:
        """Why pulls of this image are not tried now (its registry or the image failed lately), or None."""
        now = time.monotonic()
        with self._lock:
            for key in (parsed.domain, _refused_key(parsed, auth)):
                until, why = self._no_pull.get(key, (0.0, ""))
                if until > now:
                    return why
        return None

    def _skip_pulls(self, key: str, why: str) -> None:
        with self._lock:
            self._no_pull[key] = (time.monotonic() + NO_PULL_RETRY, why)


class _SourceFailed(EngineError):
    """The node an image was streamed from failed mid-stream: another may serve it."""


class _Throttle:
    """Progress messages at most every PROGRESS_EVERY seconds."""

    def __init__(self, report: Progress) -> None:
        self.report = report
        self.last = time.monotonic()
        self.layers: dict[str, tuple[int, int]] = {}

    def say(self, message: str) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY:
            self.last = now
            self.report(message)

    def pull_progress(self, ref: str, message: dict[str, Any]) -> None:
        detail = message.get("progressDetail") or {}
        if message.get("status") == "Downloading" and detail.get("total"):
            self.layers[str(message.get("id"))] = (int(detail.get("current", 0)), int(detail["total"]))
            done = sum(c for c, _ in self.layers.values())
            total = sum(t for _, t in self.layers.values())
            self.say(f"pulling image {ref}: {_mb(done)} of {_mb(total)}")

    def bytes_progress(self, ref: str, hostname: str) -> Callable[[int], None]:
        received = [0]

        def counted(size: int) -> None:
            received[0] += size
            self.say(f"receiving image {ref} from {hostname}: {_mb(received[0])}")

        return counted


def _refused_key(parsed: ImageRef, auth: Auth) -> str:
    """A registry's refusal holds for the image and these credentials: with others it may answer."""
    return f"{parsed.familiar} {hash(frozenset((auth or {}).items()))}"


def _key(ref: str) -> str:
    """One spelling per image: nginx and nginx:latest are the same."""
    try:
        return parse_image_ref(ref).tagged
    except ValueError:
        return ref


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
