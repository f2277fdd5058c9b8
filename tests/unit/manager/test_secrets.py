"""Secret and config commands: docker's names and messages, durable before they return, refusals that change
nothing, and the references a service create or update resolves through them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pyswarm.manager.errors import Conflict, Invalid, NotFound
from pyswarm.manager.manager import Manager
from pyswarm.manager.secrets import ConfigCommands, SecretCommands
from pyswarm.manager.settings import Settings
from pyswarm.manager.state import ClusterState
from pyswarm.manager.store import SqliteStore
from pyswarm.model import FileReference, Service, ServiceSpec
from tests.unit.inprocess import Cluster


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path)
    yield store
    store.close()


@pytest.fixture
def state(store: SqliteStore) -> ClusterState:
    return ClusterState(store.load())


@pytest.fixture
def secrets(state: ClusterState, store: SqliteStore) -> SecretCommands:
    return SecretCommands(state, store)


@pytest.fixture
def configs(state: ClusterState, store: SqliteStore) -> ConfigCommands:
    return ConfigCommands(state, store)


def _use(state: ClusterState, name: str, secrets: tuple[FileReference, ...] = (), configs: tuple = ()) -> None:
    """A service whose spec references these (as ServiceCommands stores it after resolve)."""
    service = Service(id=f"svc-{name}", spec=ServiceSpec(name=name, image="nginx", secrets=secrets, configs=configs))
    state.services[service.id] = service


def test_create_is_durable_and_lookups_take_id_name_or_prefix(
    secrets: SecretCommands, state: ClusterState, store: SqliteStore
) -> None:
    object_id = secrets.create("pw", b"hunter2", {"env": "prod"})
    secret = state.secrets[object_id]
    assert (secret.name, secret.data, secret.labels) == ("pw", b"hunter2", {"env": "prod"})
    assert store.load().secrets[object_id] == secret
    assert secrets.inspect(object_id) is secrets.inspect("pw") is secrets.inspect(object_id[:5]) is secret


def test_list_is_sorted_by_name(secrets: SecretCommands) -> None:
    for name in ("b", "c", "a"):
        secrets.create(name, b"x")
    assert [s.name for s in secrets.list()] == ["a", "b", "c"]


def test_a_taken_name_is_a_conflict_in_dockers_words(secrets: SecretCommands, store: SqliteStore) -> None:
    secrets.create("pw", b"one")
    with pytest.raises(Conflict, match=r"^secret pw already exists$"):
        secrets.create("pw", b"two")
    assert [s.data for s in store.load().secrets.values()] == [b"one"]


def test_secrets_and_configs_have_their_own_names(secrets: SecretCommands, configs: ConfigCommands) -> None:
    secrets.create("app", b"x")
    config_id = configs.create("app", b"y")
    assert configs.inspect("app").id == config_id
    with pytest.raises(Conflict, match=r"^config app already exists$"):
        configs.create("app", b"z")


@pytest.mark.parametrize(
    ("name", "data", "labels", "message"),
    [
        ("a b", b"x", {}, "invalid name, only 64"),
        ("", b"x", {}, "name must be provided"),
        ("pw", b"", {}, "secret data must be larger than 0 and less than 512000 bytes"),
        ("pw", b"x" * 512_000, {}, "less than 512000 bytes"),
        ("pw", b"x", {"a=b": "c"}, "invalid label key"),
    ],
)
def test_bad_input_is_invalid_and_stores_nothing(
    secrets: SecretCommands, store: SqliteStore, name: str, data: bytes, labels: dict[str, str], message: str
) -> None:
    with pytest.raises(Invalid, match=message):
        secrets.create(name, data, labels)
    assert store.load().secrets == {}


def test_lookups_say_not_found_and_ambiguous_as_docker(secrets: SecretCommands, state: ClusterState) -> None:
    with pytest.raises(NotFound, match=r"^secret nope not found$"):
        secrets.inspect("nope")
    for object_id, name in (("abc1", "one"), ("abc2", "two")):
        made = state.secrets.pop(secrets.create(name, b"x"))
        state.secrets[object_id] = replace(made, id=object_id)  # two IDs with a common prefix
    with pytest.raises(Conflict, match=r"^secret ab is ambiguous \(2 matches found\)$"):
        secrets.inspect("ab")
    with pytest.raises(NotFound):
        secrets.inspect("")


def test_remove_removes_from_state_and_store(secrets: SecretCommands, state: ClusterState, store: SqliteStore) -> None:
    keep, gone = secrets.create("keep", b"x"), secrets.create("gone", b"x")
    assert [s.id for s in secrets.remove(["gone"])] == [gone]
    assert set(state.secrets) == set(store.load().secrets) == {keep}


def test_an_object_in_use_is_not_removed(secrets: SecretCommands, state: ClusterState, store: SqliteStore) -> None:
    used = secrets.create("pw", b"x")
    free = secrets.create("free", b"x")
    _use(state, "web", secrets=(FileReference(name="pw", target="pw", id=used),))
    with pytest.raises(Conflict, match=r"^secret 'pw' is in use by the following service: web$"):
        secrets.remove(["free", "pw"])
    assert set(state.secrets) == set(store.load().secrets) == {used, free}  # all or none
    _use(state, "api", secrets=(FileReference(name="pw", target="other", id=used),))
    with pytest.raises(Conflict, match=r"^secret 'pw' is in use by the following services: api, web$"):
        secrets.remove([used])


def test_a_config_in_use_by_a_services_secrets_is_not_the_same_object(
    secrets: SecretCommands, configs: ConfigCommands, state: ClusterState
) -> None:
    config_id = configs.create("site", b"x")
    _use(state, "web", configs=(FileReference(name="site", target="/site", id=config_id),))
    with pytest.raises(Conflict, match=r"^config 'site' is in use by the following service: web$"):
        configs.remove(["site"])
    secret_id = secrets.create("site", b"x")
    assert [s.id for s in secrets.remove(["site"])] == [secret_id]


def test_resolve_fills_in_ids_and_default_targets(secrets: SecretCommands, configs: ConfigCommands) -> None:
    pw, key = secrets.create("pw", b"x"), secrets.create("key", b"y")
    site = configs.create("site", b"z")
    refs = (FileReference(name="pw", target=""), FileReference(name="key", target="/run/secrets/tls/key", mode=0o400))
    assert secrets.resolve(refs) == (
        FileReference(name="pw", target="pw", id=pw),
        FileReference(name="key", target="tls/key", id=key, mode=0o400),
    )
    assert configs.resolve((FileReference(name="site", target=""),)) == (
        FileReference(name="site", target="/site", id=site),
    )


def test_resolve_refuses_unknown_names_clashing_targets_and_bad_fields(
    secrets: SecretCommands, configs: ConfigCommands
) -> None:
    secrets.create("a", b"x")
    secrets.create("b", b"x")
    with pytest.raises(NotFound, match=r"^secret not found: nope$"):
        secrets.resolve((FileReference(name="a", target="a"), FileReference(name="nope", target="x")))
    with pytest.raises(NotFound, match=r"^config not found: a$"):
        configs.resolve((FileReference(name="a", target="/a"),))
    with pytest.raises(Invalid, match=r"^secret references 'a' and 'b' have a conflicting target: 'same'$"):
        secrets.resolve((FileReference(name="a", target="same"), FileReference(name="b", target="same")))
    with pytest.raises(Invalid, match="absolute target must be under /run/secrets/"):
        secrets.resolve((FileReference(name="a", target="/etc/shadow"),))
    with pytest.raises(Invalid, match="invalid uid"):
        secrets.resolve((FileReference(name="a", target="a", uid="root"),))
    with pytest.raises(Invalid, match="invalid mode 1777"):
        secrets.resolve((FileReference(name="a", target="a", mode=0o1777),))


def test_the_manager_has_both_and_a_restarted_one_finds_them(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "data", start=False)
    secret_id = cluster.manager.secrets.create("pw", b"hunter2")
    config_id = cluster.manager.configs.create("site", b"server {}")
    cluster.close()
    restarted = Manager(Settings(data_dir=tmp_path / "data"), engine_factory=cluster.factory)
    try:
        assert restarted.secrets.inspect("pw").data == b"hunter2"
        assert restarted.state.find_secret(secret_id[:8]).name == "pw"
        assert restarted.configs.inspect(config_id).data == b"server {}"
    finally:
        restarted.close()


def test_targets_that_clash_across_mounts_secrets_and_configs_are_refused(tmp_path: Path) -> None:
    from pyswarm.model import Mount, MountType

    cluster = Cluster(tmp_path / "data", start=False)
    try:
        manager = cluster.manager
        manager.secrets.create("x", b"1")
        manager.configs.create("c", b"2")
        clash = ServiceSpec(
            name="app",
            image="busybox",
            secrets=(FileReference("x", "x"),),
            configs=(FileReference("c", "/run/secrets/x"),),
        )
        with pytest.raises(Invalid, match="secret x and config c have a conflicting target: '/run/secrets/x'"):
            manager.services.create(clash)
        mounted = ServiceSpec(
            name="app", image="busybox", mounts=(Mount(MountType.TMPFS, "/etc/site"),),
            configs=(FileReference("c", "/etc/site"),),
        )  # fmt: skip
        with pytest.raises(Invalid, match="conflicting target"):
            manager.services.create(mounted)
        assert not manager.state.services
    finally:
        cluster.close()
