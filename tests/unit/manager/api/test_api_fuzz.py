"""Fuzz the HTTP API with schemathesis against its own OpenAPI schema, on a manager with in-memory engines.

Every operation gets generated requests, valid and invalid (examples, coverage and fuzzing phases), sent
with the client credential; every response must be no 5xx, have a documented status code, content type
and headers, and match its documented schema; invalid input must get a 4xx; OPTIONS and undeclared
methods get a 405 with the right Allow header. CI runs a bounded number of examples per operation
(PYSWARM_FUZZ_EXAMPLES, default 25): a few seconds per operation.

schemathesis.pytest.from_fixture() fails on pytest 9 (it sets `Function._nodeid`, which is gone), so the
schema is built at import from the app's own OpenAPI document (no manager needed for that), and requests
go to `LateApp`, which the module fixture points at the app of a fresh manager.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from pyswarm.manager.api import create_app
from pyswarm.manager.manager import Manager
from tests.unit.inprocess import Cluster, no_ssh_probes

MAX_EXAMPLES = int(os.environ.get("PYSWARM_FUZZ_EXAMPLES", "25"))


class LateApp:
    """The ASGI app schemathesis sends to; the fixture plugs in the real app and its client token."""

    target: Any = None
    token = ""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.target is not None, "the `fuzzed` fixture sets the app"
        await self.target(scope, receive, send)


LATE = LateApp()
schema = schemathesis.openapi.from_dict(create_app(mock.create_autospec(Manager, instance=True)).openapi())
schema.app = LATE


@schema.auth()
class ClientToken:
    """The client credential, as a real client sends it; schemathesis leaves it out when it tests auth."""

    def get(self, case: Any, context: Any) -> str:
        return LATE.token

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with no_ssh_probes():
        yield from _fuzzed(tmp_path_factory)


def _fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("fuzz") / "data")
    cluster.populate()  # services with running tasks, so responses carry tasks, endpoints and ports
    manager = cluster.manager
    wait_for_change = manager.state.wait_for_change
    # /events/wait is a long poll of up to 30 s: its contract is the same with a short wait, the fuzz is not.
    manager.state.wait_for_change = lambda seen, timeout: wait_for_change(seen, min(timeout, 0.01))  # type: ignore[method-assign]
    LATE.target, LATE.token = create_app(manager), cluster.token("client")
    yield cluster
    LATE.target = None
    cluster.close()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_api_conforms_to_its_schema(case: Any, fuzzed: Cluster) -> None:
    # positive_data_acceptance is left out: some schema-valid input is refused for reasons a schema cannot
    # state (a port another service has, an engine URL nothing answers at, tcp:// without --insecure-tcp,
    # the leader's removal): those are 400/409/422 by design, and the bad-input corpus checks each.
    case.call_and_validate(excluded_checks=[positive_data_acceptance])


def test_the_fuzzed_manager_is_still_consistent(fuzzed: Cluster) -> None:
    """After the fuzz (run first, in file order): whatever it created, changed or removed, the store holds
    what the manager holds, so a restarted manager would find the same cluster."""
    manager = fuzzed.manager
    with manager.state.lock:
        stored = manager.store.load()
        assert {k: v.version for k, v in stored.services.items()} == {
            k: v.version for k, v in manager.state.services.items()
        }
        assert set(stored.nodes) == set(manager.state.nodes)
        assert {k: v for k, v in stored.meta.items() if k.startswith("token_")} == {
            k: v for k, v in manager.state.meta.items() if k.startswith("token_")
        }
