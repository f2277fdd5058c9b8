"""Bad input to the HTTP API: each case gets its 4xx (never a 5xx), a message that names the problem, and
leaves the cluster exactly as it was (services, nodes, tasks, tokens, containers, and the store).

Also: every route of the OpenAPI schema needs a token (401 without one or with a bad one), join tokens
and node secrets are refused everywhere else (403), and rotating a join token retires the old one at once.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pyswarm.manager.api import create_app
from pyswarm.model import NodeRole
from tests.unit.inprocess import (
    ALIAS_URL,
    SPARE_URL,
    UNREACHABLE_URL,
    WORKER_URLS,
    Cluster,
    api_operations,
    no_ssh_probes,
    snapshot,
)

NEW = {"name": "new", "image": "nginx", "replicas": 1, "ports": [{"published": 8081, "target": 80}]}


def spec(**changes: Any) -> dict[str, Any]:
    return {**NEW, **changes}


def port(**changes: Any) -> dict[str, Any]:
    return spec(ports=[{"published": 8081, "target": 80, **changes}])


def restart(**changes: Any) -> dict[str, Any]:
    return spec(restart_policy=changes)


WEB = {"name": "web", "image": "nginx", "replicas": 2, "ports": [{"published": 80, "target": 80}]}


def update(version: int = 2, **changes: Any) -> dict[str, Any]:
    """An update of web (at version 2 in the fixture)."""
    return {"version": version, "spec": {**WEB, **changes}}


def join(**changes: Any) -> dict[str, Any]:
    return {"engine_url": SPARE_URL, "engine_id": "SPARE", "addr": "10.0.0.4", **changes}


@dataclass(frozen=True)
class Bad:
    method: str
    path: str
    status: int
    message: str  # a substring of the `detail` that names the problem
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    token: str = "client"  # client, worker, manager, node (node-02's secret), bogus, or none
    content: bytes | None = None
    type: str = "application/json"  # the Content-Type of `content`
    source: str = "10.0.0.4"  # the client's address (a join's addr must be it): node-04's, the spare engine's


def joining(status: int, message: str, source: str = "10.0.0.4", **changes: Any) -> Bad:
    """A join with a worker token from `source`."""
    return Bad("POST", "/swarm/join", status, message, json=join(**changes), token="worker", source=source)


# What a join-token holder may be told when its engine could not be probed (nothing about why).
GENERIC_PROBE = "cannot reach engine {url}, or it did not answer as a Docker Engine"


def create(body: Any, status: int, message: str) -> Bad:
    return Bad("POST", "/services", status, message, json=body)


BIG = "x" * 10_000
KEY = "-----BEGIN PRIVATE KEY-----\nTHE-SECRET-KEY-MATERIAL\n-----END PRIVATE KEY-----\n"
TLS = {"ca": KEY.replace("PRIVATE KEY", "CERTIFICATE"), "cert": KEY.replace("PRIVATE KEY", "CERTIFICATE"), "key": KEY}
FINGERPRINT = "SHA256:" + "A" * 43
NAME = "invalid service name"
CASES: dict[str, Bad] = {
    # --- names -----------------------------------------------------------------------------------------
    "name with a space": create(spec(name="my web"), 422, NAME),
    "name with a slash": create(spec(name="a/b"), 422, NAME),
    "name with ;": create(spec(name="a;rm -rf /"), 422, NAME),
    "name with $()": create(spec(name="$(reboot)"), 422, NAME),
    "name with backticks": create(spec(name="`id`"), 422, NAME),
    "name with a pipe and redirection": create(spec(name="a|b>c"), 422, NAME),
    "name of 10 kB": create(spec(name=BIG), 422, "name: String should have at most 63 characters"),
    "unicode name": create(spec(name="wëb"), 422, NAME),
    "name with NUL": create(spec(name="we\x00b"), 422, NAME),
    "empty name": create(spec(name=""), 422, NAME),
    "name starting with a dash": create(spec(name="-web"), 422, NAME),
    "name not a string": create(spec(name=123), 422, "name: Input should be a valid string"),
    "name in use": create(spec(name="web"), 409, "service name 'web' is already in use"),
    # --- ports -----------------------------------------------------------------------------------------
    "published port 0": create(port(published=0), 422, "ports.0.published: Input should be greater than or equal to 1"),
    "published port 65536": create(port(published=65536), 422, "ports.0.published: Input should be less than or"),
    "published port -1": create(port(published=-1), 422, "ports.0.published: Input should be greater than"),
    "target port 0": create(port(target=0), 422, "ports.0.target: Input should be greater than or equal to 1"),
    "published port '80:'": create(port(published="80:"), 422, "ports.0.published: Input should be a valid integer"),
    "target port 'abc'": create(port(target="abc"), 422, "ports.0.target: Input should be a valid integer"),
    "port 80.5": create(port(published=80.5), 422, "ports.0.published: Input should be a valid integer"),
    "port given twice": create(
        spec(ports=[{"published": 8081, "target": 80}, {"published": 8081, "target": 81}]),
        400,
        "published port 8081/tcp is given twice",
    ),
    "port of another service": create(
        spec(ports=[{"published": 80, "target": 80}]), 409, "port '80/tcp' is already in use by service 'web'"
    ),
    "SSH port": create(spec(ports=[{"published": 22, "target": 80}]), 400, "published port 22 is reserved"),
    "manager port": create(spec(ports=[{"published": 2377, "target": 80}]), 400, "published port 2377 is reserved"),
    "ephemeral port": create(spec(ports=[{"published": 40000, "target": 80}]), 400, "ephemeral range"),
    "protocol sctp": create(port(protocol="sctp"), 422, "ports.0.protocol: Input should be 'tcp' or 'udp'"),
    "publish mode bogus": create(port(mode="bogus"), 422, "ports.0.mode: Input should be 'ingress' or 'host'"),
    "port with an unknown field": create(port(colour="red"), 422, "ports.0.colour: Extra inputs are not permitted"),
    "port without target": create(spec(ports=[{"published": 8081}]), 422, "ports.0.target: Field required"),
    # --- replicas and mode -----------------------------------------------------------------------------
    "replicas -1": create(spec(replicas=-1), 422, "replicas: Input should be greater than or equal to 0"),
    "replicas 1e9": create(spec(replicas=1e9), 422, "replicas: Input should be a valid integer"),
    "replicas 10^9": create(spec(replicas=10**9), 422, "replicas: Input should be less than or equal to 10000"),
    "replicas 'three'": create(spec(replicas="three"), 422, "replicas: Input should be a valid integer"),
    "replicas true": create(spec(replicas=True), 422, "replicas: Input should be a valid integer"),
    "replicas with global mode": create(
        spec(mode="global", replicas=3), 422, "replicas can only be used with replicated or replicated-job mode"
    ),
    "mode 'sometimes'": create(
        spec(mode="sometimes"), 422, "mode: Input should be 'replicated', 'global', 'replicated-job' or"
    ),
    "max replicas per node -1": create(spec(max_replicas_per_node=-1), 422, "max_replicas_per_node: Input should"),
    # --- placement -------------------------------------------------------------------------------------
    "constraint ~=": create(spec(constraints=["node.hostname~=x"]), 422, "invalid constraint 'node.hostname~=x'"),
    "constraint =": create(spec(constraints=["node.hostname=x"]), 422, "invalid constraint 'node.hostname=x'"),
    "constraint >=": create(spec(constraints=["node.hostname>=x"]), 422, "expected KEY==VALUE or KEY!=VALUE"),
    "constraint <>": create(spec(constraints=["node.hostname<>x"]), 422, "expected KEY==VALUE or KEY!=VALUE"),
    "constraint key unknown": create(spec(constraints=["node.colour==red"]), 422, "invalid constraint key"),
    "constraint role unknown": create(spec(constraints=["node.role==boss"]), 422, "node.role is manager or worker"),
    "constraint of 10 kB": create(
        spec(constraints=["node.hostname==" + BIG]), 422, "constraints.0: String should have at most 1024"
    ),
    "constraint with NUL": create(spec(constraints=["node.hostname==a\x00b"]), 422, "cannot contain NUL bytes"),
    "placement pref not a label key": create(
        spec(placement_prefs=["spread=node.labels.zone"]), 422, "invalid label key"
    ),
    # --- env, labels, image, command -------------------------------------------------------------------
    "env '=x'": create(spec(env=["=x"]), 422, "invalid environment variable '=x'"),
    "env 'A B=1'": create(spec(env=["A B=1"]), 422, "invalid environment variable 'A B=1'"),
    "env with NUL": create(spec(env=["A=\x00"]), 422, "invalid environment variable"),
    "env not a string": create(spec(env=[5]), 422, "env.0: Input should be a valid string"),
    "label key empty": create(spec(labels={"": "x"}), 422, "invalid label key ''"),
    "label key with a space": create(spec(labels={"a b": "1"}), 422, "invalid label key 'a b'"),
    "label value with NUL": create(spec(labels={"a": "x\x00"}), 422, "invalid value for label 'a'"),
    "label value of 5 kB": create(spec(labels={"a": "x" * 5000}), 422, "labels.a: String should have at most 4096"),
    "image with a space": create(spec(image="nginx latest"), 422, "invalid image reference 'nginx latest'"),
    "image with ;": create(spec(image="nginx;reboot"), 422, "invalid image reference"),
    "image with ..": create(spec(image="../etc/passwd"), 422, "invalid image reference"),
    "image empty": create(spec(image=""), 422, "invalid image reference"),
    "command with NUL": create(spec(command=["sh", "-c", "a\x00b"]), 422, "command arguments cannot contain NUL"),
    "command not a list": create(spec(command="nginx -g daemon off;"), 422, "command: Input should be a valid list"),
    # --- restart policy and durations ------------------------------------------------------------------
    "restart condition 'sometimes'": create(restart(condition="sometimes"), 422, "restart_policy.condition: Input"),
    "restart delay -1": create(restart(delay=-1), 422, "restart_policy.delay: Input should be greater than or"),
    "restart delay '5parsecs'": create(restart(delay="5parsecs"), 422, "restart_policy.delay: Input should be a"),
    "restart max attempts -1": create(restart(max_attempts=-1), 422, "restart_policy.max_attempts: Input"),
    "stop grace period 1e12": create(spec(stop_grace_period=1e12), 422, "stop_grace_period: Input should be less"),
    # --- the body as a whole ---------------------------------------------------------------------------
    "unknown field": create(spec(surprise=1), 422, "surprise: Extra inputs are not permitted"),
    "no image": create({"name": "new"}, 422, "image: Field required"),
    "body is a list": create([NEW], 422, "the request body must be a JSON object"),
    "no body": Bad("POST", "/services", 422, "request body: Field required"),
    "body not JSON": Bad("POST", "/services", 422, "the request body is not valid JSON", content=b'{"name": '),
    "body not sent as JSON": Bad(
        "POST", "/services", 422, "must be a JSON object, sent as application/json", content=b"{}", type="text/plain"
    ),
    # --- updates ---------------------------------------------------------------------------------------
    "update with a stale version": Bad(
        "POST", "/services/web/update", 409, "update out of sequence", json=update(1, replicas=5)
    ),
    "update with version 0": Bad(
        "POST", "/services/web/update", 422, "version: Input should be greater than or equal to 1", json=update(0)
    ),
    "update without version": Bad("POST", "/services/web/update", 422, "version: Field required", json={"spec": WEB}),
    "rename by update": Bad("POST", "/services/web/update", 400, "cannot be renamed", json=update(name="web2")),
    "mode change by update": Bad(
        "POST", "/services/web/update", 400, "mode cannot be changed", json=update(mode="global", replicas=1)
    ),
    "update to a port in use": Bad(
        "POST",
        "/services/web/update",
        409,
        "port '8080/tcp' is already in use by service 'api'",
        json=update(ports=[{"published": 8080, "target": 80}]),
    ),
    "update with replicas -1": Bad(
        "POST", "/services/web/update", 422, "spec.replicas: Input", json=update(replicas=-1)
    ),
    "update of an unknown service": Bad(
        "POST", "/services/nope/update", 404, "service 'nope' not found", json=update(name="nope")
    ),
    # --- other service routes --------------------------------------------------------------------------
    "inspect an unknown service": Bad("GET", "/services/nope", 404, "service 'nope' not found"),
    "rm an unknown service": Bad("DELETE", "/services/nope", 404, "service 'nope' not found"),
    "tasks of an unknown service": Bad("GET", "/services/nope/tasks", 404, "service 'nope' not found"),
    "logs of an unknown service": Bad("GET", "/services/nope/logs", 404, "service 'nope' not found"),
    "logs with tail -1": Bad("GET", "/services/web/logs", 422, "tail: Input", params={"tail": -1}),
    "logs with tail 'many'": Bad("GET", "/services/web/logs", 422, "tail: Input", params={"tail": "many"}),
    "service reference of 300 characters": Bad(
        "GET", "/services/" + "a" * 300, 422, "ref: String should have at most 256 characters"
    ),
    "unknown query parameter": Bad(
        "DELETE", "/services/web", 422, "unknown query parameter 'force'", params={"force": "true"}
    ),
    # --- nodes -----------------------------------------------------------------------------------------
    "availability 'sometimes'": Bad(
        "POST", "/nodes/node-02/update", 422, "availability: Input should be", json={"availability": "sometimes"}
    ),
    "label-rm of a label not set": Bad(
        "POST",
        "/nodes/node-02/update",
        400,
        "label 'nolabel' is not set on node node-02",
        json={"label_rm": ["nolabel"]},
    ),
    "label-rm of 10 kB": Bad("POST", "/nodes/node-02/update", 422, "invalid label key", json={"label_rm": [BIG]}),
    "node label key empty": Bad(
        "POST", "/nodes/node-02/update", 422, "invalid label key ''", json={"label_add": {"": "x"}}
    ),
    "node label key with a space": Bad(
        "POST", "/nodes/node-02/update", 422, "invalid label key 'a b'", json={"label_add": {"a b": "1"}}
    ),
    "role 'boss'": Bad("POST", "/nodes/node-02/update", 422, "role: Input should be", json={"role": "boss"}),
    "update an unknown node": Bad(
        "POST", "/nodes/nope/update", 404, "node 'nope' not found", json={"availability": "drain"}
    ),
    "demote the leader": Bad(
        "POST", "/nodes/node-01/update", 400, "the leader cannot be demoted", json={"role": "worker"}
    ),
    "rm the leader": Bad("DELETE", "/nodes/node-01", 400, "node node-01 is the leader"),
    "rm a ready node without force": Bad("DELETE", "/nodes/node-02", 400, "is not down and can't be removed"),
    "rm with force=maybe": Bad(
        "DELETE", "/nodes/node-02", 422, "force: Input should be a valid boolean", params={"force": "maybe"}
    ),
    "rm an unknown node": Bad("DELETE", "/nodes/nope", 404, "node 'nope' not found"),
    "inspect an unknown node": Bad("GET", "/nodes/nope", 404, "node 'nope' not found"),
    "tasks of an unknown node": Bad("GET", "/nodes/nope/tasks", 404, "node 'nope' not found"),
    # --- node add --------------------------------------------------------------------------------------
    "add ftp://x": Bad("POST", "/nodes", 422, "invalid engine URL 'ftp://x'", json={"engine_url": "ftp://x"}),
    "add ssh://bad host": Bad("POST", "/nodes", 422, "invalid engine URL", json={"engine_url": "ssh://bad host"}),
    "add tcp:// without port": Bad("POST", "/nodes", 422, "tcp:// needs a port", json={"engine_url": "tcp://host"}),
    "add tcp:// without TLS": Bad(
        "POST", "/nodes", 422, "is tcp:// without TLS", json={"engine_url": "tcp://127.0.0.1:2376"}
    ),
    "add with a bad port": Bad("POST", "/nodes", 422, "bad port", json={"engine_url": "ssh://root@10.0.0.4:99999"}),
    "add with a password": Bad(
        "POST", "/nodes", 422, "cannot carry a password", json={"engine_url": "ssh://root:hunter2@10.0.0.4"}
    ),
    "add an engine that is not there": Bad(
        "POST", "/nodes", 422, f"cannot reach engine {UNREACHABLE_URL}", json={"engine_url": UNREACHABLE_URL}
    ),
    "add an engine already in, by another URL": Bad(
        "POST", "/nodes", 409, "is already in the swarm as node-02", json={"engine_url": ALIAS_URL}
    ),
    "add with a numeric addr that is not an IPv4 address": Bad(
        "POST",
        "/nodes",
        400,
        "node address '10.1' is not an IPv4 address",
        json={"engine_url": SPARE_URL, "addr": "10.1"},
    ),
    "add with addr 0.0.0.0": Bad(
        "POST", "/nodes", 400, "does not resolve to one", json={"engine_url": SPARE_URL, "addr": "0.0.0.0"}
    ),
    "add with an IPv6 addr": Bad(
        "POST",
        "/nodes",
        400,
        "node address '::1' is not an IPv4 address",
        json={"engine_url": SPARE_URL, "addr": "::1"},
    ),
    "add a unix:// engine without addr": Bad(
        "POST", "/nodes", 400, "the node's address is not known", json={"engine_url": "unix:///var/run/docker.sock"}
    ),
    "add with addr '; reboot'": Bad(
        "POST", "/nodes", 422, "addr: String should match pattern", json={"engine_url": SPARE_URL, "addr": "x; reboot"}
    ),
    "add with TLS for an ssh:// engine": Bad(
        "POST",
        "/nodes",
        400,
        "TLS credentials only apply to tcp:// engines",
        json={"engine_url": SPARE_URL, "tls": TLS},
    ),
    "add with TLS that is not PEM": Bad(
        "POST",
        "/nodes",
        422,
        "tls.key is not a PEM file",
        json={"engine_url": "tcp://10.0.0.4:2376", "tls": {**TLS, "key": "hunter2"}},
    ),
    "add with TLS missing the key": Bad(
        "POST",
        "/nodes",
        422,
        "tls.key: Field required",
        json={"engine_url": "tcp://10.0.0.4:2376", "tls": {"ca": TLS["ca"], "cert": TLS["cert"]}},
    ),
    "add with a malformed SSH fingerprint": Bad(
        "POST",
        "/nodes",
        422,
        "ssh_fingerprint: String should match pattern",
        json={"engine_url": SPARE_URL, "ssh_fingerprint": "MD5:aa:bb"},
    ),
    "add with an SSH fingerprint for tcp://": Bad(
        "POST",
        "/nodes",
        400,
        "fingerprint only applies to ssh:// engines",
        json={"engine_url": "tcp://10.0.0.4:2376", "insecure_tcp": True, "ssh_fingerprint": FINGERPRINT},
    ),
    "add with an SSH fingerprint of a host not there": Bad(
        "POST",
        "/nodes",
        422,
        "cannot reach 10.0.0.9:22",
        json={"engine_url": UNREACHABLE_URL, "ssh_fingerprint": FINGERPRINT},
    ),
    # --- join ------------------------------------------------------------------------------------------
    "join as another engine": Bad(
        "POST", "/swarm/join", 403, "not the engine that asked to join", json=join(), token="worker"
    ),
    "join with the client token": Bad(
        "POST", "/swarm/join", 403, "joining needs a worker or manager join token", json=join(), token="client"
    ),
    "join with a node secret": Bad(
        "POST", "/swarm/join", 403, "joining needs a worker or manager join token", json=join(), token="node"
    ),
    "join with a bogus token": Bad("POST", "/swarm/join", 401, "missing or invalid token", json=join(), token="bogus"),
    "join without a token": Bad("POST", "/swarm/join", 401, "missing or invalid token", json=join(), token="none"),
    "join with ftp://x": Bad(
        "POST", "/swarm/join", 422, "invalid engine URL", json=join(engine_url="ftp://x"), token="worker"
    ),
    "join with tcp:// without TLS": Bad(
        "POST", "/swarm/join", 422, "without TLS", json=join(engine_url="tcp://127.0.0.1:2376"), token="worker"
    ),
    "join with tcp:// without TLS, advertised": joining(
        422,
        "is tcp:// without TLS: a join needs its TLS files",
        engine_url="tcp://127.0.0.1:2376",
        advertise_engine=True,
    ),
    "join from an engine that is not there": joining(
        422,
        GENERIC_PROBE.format(url=UNREACHABLE_URL),
        source="10.0.0.9",
        engine_url=UNREACHABLE_URL,
        addr="10.0.0.9",
    ),
    "join advertising an engine that is not there": joining(
        422, GENERIC_PROBE.format(url=UNREACHABLE_URL), engine_url=UNREACHABLE_URL, advertise_engine=True
    ),
    # --- join: bound to the joining node's own address (security review, problem 2) --------------------
    "join with the addr of a node in the swarm": joining(403, "must be the node's own address", addr="10.0.0.2"),
    "join with the addr of any internal IP": joining(403, "must be the node's own address", addr="10.0.0.77"),
    "join with a host name as addr": joining(403, "must be the node's own address", addr="node-04.example"),
    "join from a client address that is not IPv4": joining(
        403, "a join must come from the node's own IPv4 address", source="testclient"
    ),
    "join naming an engine at another address": joining(
        403, "is not at the node's own address (10.0.0.4)", engine_url=WORKER_URLS[0]
    ),
    "join with a non-ASCII engine id": joining(403, "not the engine that asked to join", engine_id="é"),
    "join with a node secret of 300 characters": joining(
        422, "node_secret: Value should have at most 256", node_secret="n" * 300
    ),
    # --- join: what a probe may tell a join-token holder (problem 3) -----------------------------------
    "join with unix://": joining(
        422, "a join cannot name a unix:// engine", engine_url="unix:///var/run/docker.sock", advertise_engine=True
    ),
    "join with unix:// of a file that is not there": joining(
        422, "a join cannot name a unix:// engine", engine_url="unix:///nonexistent.sock", advertise_engine=True
    ),
    "join with tcp:// and insecure_tcp": joining(
        422,
        "a join cannot use a tcp:// engine without TLS",
        engine_url="tcp://10.0.0.4:2376",
        insecure_tcp=True,
    ),
    "join with a garbage addr": Bad(
        "POST", "/swarm/join", 422, "addr: String should match pattern", json=join(addr="$(id)"), token="worker"
    ),
    "join with an empty engine id": Bad(
        "POST", "/swarm/join", 422, "engine_id: String should have at least 1", json=join(engine_id=""), token="worker"
    ),
    # --- tokens and other routes -----------------------------------------------------------------------
    "join-token of role boss": Bad("GET", "/swarm/join-token/boss", 422, "role: Input should be 'worker' or 'manager'"),
    "rotate role boss": Bad("POST", "/swarm/join-token/boss/rotate", 422, "role: Input should be 'worker' or"),
    "leave with the client token": Bad("POST", "/swarm/leave", 403, "only a node's own credential can make it leave"),
    "leave with a join token": Bad("POST", "/swarm/leave", 403, "only a node's own credential", token="worker"),
    "rotate with a worker token": Bad(
        "POST", "/swarm/join-token/worker/rotate", 403, "may only be used to join", token="worker"
    ),
    "create with the manager join token": Bad(
        "POST", "/services", 403, "this token may only be used to join the swarm", json=NEW, token="manager"
    ),
    "join with the client token and a bad body": Bad(
        "POST", "/swarm/join", 403, "joining needs a worker or manager join token", json={"x": 1}
    ),
    "list nodes with a node secret": Bad("GET", "/nodes", 403, "may only be used to join", token="node"),
    "wait with timeout 31": Bad("GET", "/events/wait", 422, "timeout: Input should be less", params={"timeout": 31}),
    "wait with seen -1": Bad("GET", "/events/wait", 422, "seen: Input should be greater", params={"seen": -1}),
}


# Security review, problem 6: label keys checked on their own, one operator per constraint, and the ports
# the manager reaches engines through (or etcd's) reserved.
CASES.update(
    {
        "label key with '='": create(
            spec(labels={"zone=a": "b"}), 422, "invalid label key 'zone=a': a key cannot contain '='"
        ),
        "label key with a newline": create(spec(labels={"a\nb": "1"}), 422, "a key cannot contain whitespace"),
        "label key with an escape code": create(
            spec(labels={"a\x1b[31m": "1"}), 422, "a key cannot contain control characters"
        ),
        "node label key with '='": Bad(
            "POST", "/nodes/node-02/update", 422, "invalid label key 'zone=a'", json={"label_add": {"zone=a": "b"}}
        ),
        "label-rm of a key with '=' that is not set": Bad(
            "POST",
            "/nodes/node-02/update",
            400,
            "label 'zone=a' is not set on node node-02",  # a key with `=` may be named: an old one may be set
            json={"label_rm": ["zone=a"]},
        ),
        "label-rm of an empty key": Bad(
            "POST", "/nodes/node-02/update", 422, "invalid label key ''", json={"label_rm": [""]}
        ),
        "label-rm of a key with NUL": Bad(
            "POST", "/nodes/node-02/update", 422, "no label can have it", json={"label_rm": ["a\x00"]}
        ),
        "constraint with a second operator": create(
            spec(constraints=["node.hostname==node-02!=x"]), 422, "contains '!=', so it is ambiguous"
        ),
        "constraint with == in its value": create(
            spec(constraints=["node.labels.zone==a==b"]), 422, "contains '==', so it is ambiguous"
        ),
        "update with a constraint with a second operator": Bad(
            "POST",
            "/services/web/update",
            422,
            "so it is ambiguous",
            json=update(constraints=["node.role!=manager==x"]),
        ),
        "Docker API port 2375": create(
            spec(ports=[{"published": 2375, "target": 80}]), 400, "published port 2375 is reserved: the Docker"
        ),
        "Docker API TLS port 2376": create(
            spec(ports=[{"published": 2376, "target": 80}]), 400, "published port 2376 is reserved: the Docker"
        ),
        "etcd client port 2379": create(
            spec(ports=[{"published": 2379, "target": 80}]), 400, "published port 2379 is reserved: etcd's"
        ),
        "etcd peer port 2380": create(
            spec(ports=[{"published": 2380, "target": 80}]), 400, "published port 2380 is reserved: etcd's"
        ),
        "reserved port in host mode": create(port(published=2376, mode="host"), 400, "published port 2376 is"),
        "reserved port over UDP": create(port(published=2379, protocol="udp"), 400, "published port 2379 is"),
        "SSH port says why": create(
            spec(ports=[{"published": 22, "target": 80}]), 400, "reserved: SSH's port: the manager reaches ssh://"
        ),
        "manager port says why": create(
            spec(ports=[{"published": 2377, "target": 80}]), 400, "reserved: the manager's API listens on it"
        ),
        "update to the Docker API port": Bad(
            "POST",
            "/services/web/update",
            400,
            "published port 2375 is reserved",
            json=update(ports=[{"published": 2375, "target": 80}]),
        ),
    }
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("bad-api") / "data")
    cluster.populate()
    manager = cluster.manager
    manager.services.update("web", manager.state.find_service("web").spec, 1)  # web is now at version 2
    cluster.wait_converged()
    with no_ssh_probes():
        yield cluster
    cluster.close()


def http(cluster: Cluster, token: str, source: str = "10.0.0.4") -> TestClient:
    """The API as a client at `source` sees it (a join must come from the joining node's own address)."""
    headers = {}
    if token == "bogus":
        headers["Authorization"] = "Bearer PSWTKN-1-c-" + "0" * 48
    elif token != "none":
        headers["Authorization"] = f"Bearer {cluster.token(token)}"
    return TestClient(create_app(cluster.manager), headers=headers, client=(source, 50000))


def test_the_corpus_is_big_enough() -> None:
    assert len(CASES) >= 50


@pytest.mark.reliability("Bad input refused by the API (4xx, clear message, state unchanged)")
@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input_gets_a_4xx_a_clear_message_and_changes_nothing(cluster: Cluster, case: Bad) -> None:
    before = snapshot(cluster)
    headers = {"Content-Type": case.type} if case.content is not None else {}
    response = http(cluster, case.token, case.source).request(
        case.method, case.path, json=case.json, params=case.params, content=case.content, headers=headers
    )
    assert response.status_code == case.status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert case.message in detail
    assert len(detail) < 600  # a 10 kB input is not echoed back
    assert snapshot(cluster) == before


# --- tokens ----------------------------------------------------------------------------------------------


def test_the_schema_has_every_route(cluster: Cluster) -> None:
    operations = api_operations(cluster.manager)
    assert len(operations) >= 21
    assert ("POST", "/swarm/join") in operations and ("GET", "/services/web/logs") in operations


# The cluster CA's certificate is public: a joining node checks it against its token before it trusts the
# manager (see test_the_ca_certificate_is_the_one_public_route).
PUBLIC = {("GET", "/swarm/ca")}


def test_the_ca_certificate_is_the_one_public_route(cluster: Cluster) -> None:
    app = TestClient(create_app(cluster.manager))
    answer = app.get("/swarm/ca")
    assert answer.status_code == 200
    pem = answer.text
    assert pem.startswith("-----BEGIN CERTIFICATE-----") and "PRIVATE" not in pem
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
    assert cluster.manager.state.meta["ca_digest"] == digest
    assert all(f"-{digest}-" in cluster.token(role) for role in ("worker", "manager", "client"))
    public = {(m, p) for m, p in api_operations(cluster.manager)} & PUBLIC
    assert public == PUBLIC


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Bearer PSWTKN-1-c-nope", "Basic dXNlcjpwYXNz", "bearer\tx", "Bearer a b"],
)
def test_every_route_needs_a_valid_token(cluster: Cluster, authorization: str | None) -> None:
    app = TestClient(create_app(cluster.manager))
    headers = {"Authorization": authorization} if authorization is not None else {}
    before = snapshot(cluster)
    for method, path in api_operations(cluster.manager):
        if (method, path) in PUBLIC:
            continue
        response = app.request(method, path, headers=headers, json={})
        assert response.status_code == 401, (method, path, response.text)
        assert response.json() == {"detail": "missing or invalid token"}
        assert response.headers["www-authenticate"] == "Bearer"
    assert app.get("/openapi.json", headers=headers).status_code == 401
    assert app.get("/docs").status_code == 404
    assert snapshot(cluster) == before


@pytest.mark.parametrize("role", ["worker", "manager", "node"])
def test_join_tokens_and_node_secrets_are_refused_on_every_other_route(cluster: Cluster, role: str) -> None:
    app = http(cluster, role)
    before = snapshot(cluster)
    allowed = PUBLIC | ({("POST", "/swarm/join")} if role != "node" else {("POST", "/swarm/leave")})
    for method, path in api_operations(cluster.manager):
        if (method, path) in allowed:
            continue
        response = app.request(method, path, json={})
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["detail"] in (
            "this token may only be used to join the swarm",
            "joining needs a worker or manager join token",
            "only a node's own credential can make it leave",
        )
    assert app.get("/openapi.json").status_code == 403
    assert snapshot(cluster) == before


def test_a_worker_token_can_join(tmp_path_factory: pytest.TempPathFactory) -> None:
    cluster = Cluster(tmp_path_factory.mktemp("join") / "data")
    try:
        response = http(cluster, "worker").post("/swarm/join", json=join(engine_id=cluster.spare.engine_id))
        assert response.status_code == 200, response.text
        assert response.json()["role"] == "worker" and response.json()["client_token"] is None
        assert "node-04" in {n.hostname for n in cluster.manager.state.nodes.values()}
    finally:
        cluster.close()


def test_rotation_retires_the_old_join_token_at_once(tmp_path_factory: pytest.TempPathFactory) -> None:
    cluster = Cluster(tmp_path_factory.mktemp("rotate") / "data")
    try:
        old = cluster.token("worker")
        stale = http(cluster, "worker")
        rotated = http(cluster, "client").post("/swarm/join-token/worker/rotate")
        assert rotated.status_code == 200 and rotated.json()["token"] != old
        body = join(engine_id=cluster.spare.engine_id)
        refused = stale.post("/swarm/join", json=body)
        assert refused.status_code == 401
        assert old not in refused.text
        assert len(cluster.manager.state.nodes) == 3
        assert http(cluster, "client").get("/swarm/join-token/worker").json()["token"] == rotated.json()["token"]
        assert http(cluster, "worker").post("/swarm/join", json=body).status_code == 200
    finally:
        cluster.close()


def test_adding_a_node_already_in_the_swarm_is_refused(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "data")
    try:
        cluster.manager.nodes.update("node-02", role=NodeRole.MANAGER)
        cluster.wait_converged()
        before = snapshot(cluster)
        response = http(cluster, "client").post("/nodes", json={"engine_url": WORKER_URLS[0]})
        assert response.status_code == 409, response.text
        assert "is already in the swarm as node-02" in response.json()["detail"]
        assert snapshot(cluster) == before
    finally:
        cluster.close()


def test_a_refused_node_add_leaves_no_tls_key_on_disk(cluster: Cluster) -> None:
    data_dir = cluster.manager.settings.data_dir
    response = http(cluster, "client").post("/nodes", json={"engine_url": "tcp://10.0.0.9:2376", "tls": TLS})
    assert response.status_code == 422, response.text
    assert "THE-SECRET-KEY-MATERIAL" not in response.text
    leftovers = [p for p in data_dir.rglob("*.pem") if "THE-SECRET-KEY-MATERIAL" in p.read_text()]
    assert not leftovers


# --- security review, problem 6: a node's own SSH port; labels an earlier release let in -------------------


def test_a_nodes_own_ssh_port_is_reserved(tmp_path: Path) -> None:
    """A node whose sshd listens on 2222: publishing 2222 would take the port over on every node (the mesh),
    and cut the manager off that node's engine."""
    cluster = Cluster(tmp_path / "data")
    try:
        url = SPARE_URL + ":2222"
        cluster.aliases[url] = cluster.spare
        added = http(cluster, "client").post("/nodes", json={"engine_url": url})
        assert added.status_code == 201, added.text
        before = snapshot(cluster)
        for mode in ("ingress", "host"):
            response = http(cluster, "client").post("/services", json=port(published=2222, mode=mode))
            assert response.status_code == 400, response.text
            assert response.json()["detail"] == (
                f"published port 2222 is reserved: node node-04's engine is reached through it ({url}); "
                "choose another port"
            )
        assert snapshot(cluster) == before
        assert http(cluster, "client").post("/services", json=port(published=2223)).status_code == 201
    finally:
        cluster.close()


def test_labels_an_earlier_release_let_in_can_still_be_removed(tmp_path: Path) -> None:
    """The previous release stored `zone=a` whole as a key (the API checked only `zone`), and `--label-rm`
    refused to name it. It can be named for removal; it cannot be set again."""
    cluster = Cluster(tmp_path / "data")
    try:
        manager = cluster.manager
        with manager.state.lock:
            node = manager.state.find_node("node-02")
            node.labels.update({"zone=a": "b", "bad key": "c", "ok": "1"})
            manager.store.write(nodes=[node])
        client = http(cluster, "client")
        response = client.post("/nodes/node-02/update", json={"label_rm": ["zone=a", "bad key"]})
        assert response.status_code == 200, response.text
        assert response.json()["labels"] == {"ok": "1"}
        assert manager.store.load().nodes[node.id].labels == {"ok": "1"}
        again = client.post("/nodes/node-02/update", json={"label_add": {"zone=a": "b"}})
        assert again.status_code == 422 and "invalid label key 'zone=a'" in again.json()["detail"]
    finally:
        cluster.close()
