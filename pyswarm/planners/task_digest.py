"""The digest of what a task's container is made from: tasks whose digest differs from their service's
current one are outdated (a rolling update replaces them). Pure."""

from __future__ import annotations

import hashlib
import json

from pyswarm.model import ServiceSpec
from pyswarm.model.codec import container_settings_to_dict

# id(spec) -> (spec, digest). Specs are frozen, so the digest of a given object never changes; keeping the
# spec itself in the entry keeps its id from being reused while cached.
_digest_cache: dict[int, tuple[ServiceSpec, str]] = {}
_DIGEST_CACHE_SIZE = 16384
_DEFAULT_SETTINGS = container_settings_to_dict(ServiceSpec(name="x", image="x"))


def task_spec_digest(spec: ServiceSpec) -> str:
    """A stable digest of what a task's container is made from: image, command, env, labels, ports,
    force_update and the container settings (mounts, resources, health check, secrets...). Replicas,
    max_concurrent, constraints, placement and restart policy are not in it: changing them does not replace
    running tasks. A setting at its default adds nothing, so specs from before it existed keep their digest."""
    cached = _digest_cache.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1]
    document = {
        "image": spec.image,
        "command": list(spec.command),
        "env": list(spec.env),
        "labels": sorted(spec.labels.items()),
        "ports": [[p.published, p.target, p.protocol.value, p.mode.value] for p in spec.ports],
        "force_update": spec.force_update,
    }
    defaults = _DEFAULT_SETTINGS
    for key, value in container_settings_to_dict(spec).items():
        if key != "max_concurrent" and value != defaults[key]:
            document[key] = value
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(encoded).hexdigest()[:16]
    if len(_digest_cache) >= _DIGEST_CACHE_SIZE:
        _digest_cache.clear()
    _digest_cache[id(spec)] = (spec, digest)
    return digest
