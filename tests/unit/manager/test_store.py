"""The state store: durable, private, and clear about files it cannot use."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from pyswarm.cli.main import cli
from pyswarm.manager.daemon import EXIT_CONFIG, save_settings
from pyswarm.manager.files import UnsafeDirectory, write_private_json
from pyswarm.manager.settings import Settings
from pyswarm.manager.store import SCHEMA_VERSION, STATE_FILE, SqliteStore, StoreError
from pyswarm.model import Constraint, ConstraintOp, PortConfig, Service, ServiceSpec


def test_writes_are_durable_and_files_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = SqliteStore(data)
    service = Service(id="s1", spec=ServiceSpec(name="web", image="nginx", replicas=3, ports=(PortConfig(80, 80),)))
    store.write(services=[service], meta={"cluster_id": "c"})
    store.close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / STATE_FILE).stat().st_mode) == 0o600
    loaded = SqliteStore(data).load()
    assert loaded.services["s1"].spec == service.spec
    assert loaded.meta["cluster_id"] == "c"


def test_a_data_dir_others_can_only_read_is_kept_as_it_is_and_the_state_file_made_private(tmp_path: Path) -> None:
    """An existing directory's mode is never changed (it may be the user's, or shared); one that others can
    only read is used: every file in it is 0600. The state file is ours: it is made 0600 again."""
    data = tmp_path / "data"
    SqliteStore(data).close()
    os.chmod(data, 0o755)
    os.chmod(data / STATE_FILE, 0o644)
    SqliteStore(data).close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o755
    assert stat.S_IMODE((data / STATE_FILE).stat().st_mode) == 0o600


def test_a_new_data_dir_is_0700_and_a_shared_parent_keeps_its_mode(tmp_path: Path) -> None:
    """Security review, problem 7: a data directory made in a shared one (mode 1777) left that one 0700."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    data = shared / "pyswarm" / "data"
    SqliteStore(data).close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    write_private_json(shared / "config" / "config.json", {"token": "t"})
    assert stat.S_IMODE((shared / "config").stat().st_mode) == 0o700
    assert stat.S_IMODE((shared / "config" / "config.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777


@pytest.mark.parametrize("mode", [0o1777, 0o777, 0o770, 0o775, 0o1733])
def test_a_data_dir_others_can_write_to_is_refused_and_left_as_it_is(tmp_path: Path, mode: int) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, mode)
    with pytest.raises(UnsafeDirectory, match=rf"{shared} can be written by .* \(mode {mode:04o}\).*chmod go-w"):
        SqliteStore(shared)
    with pytest.raises(UnsafeDirectory, match="can be written by"):
        write_private_json(shared / "config.json", {"token": "t"})  # a config file given in /tmp, say
    assert stat.S_IMODE(shared.stat().st_mode) == mode
    assert list(shared.iterdir()) == []  # no state file, no config: nothing was written there


@pytest.mark.skipif(os.geteuid() != 0, reason="making a directory another user's needs root")
def test_a_data_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 12345, 12345)
    with pytest.raises(UnsafeDirectory, match="belongs to another user"):
        SqliteStore(theirs)
    assert theirs.stat().st_uid == 12345 and stat.S_IMODE(theirs.stat().st_mode) == 0o700


def test_a_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("x")
    with pytest.raises(UnsafeDirectory, match="is not a directory"):
        SqliteStore(tmp_path / "data")


def test_meta_entries_are_deleted_with_the_rest_of_a_write(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data")
    store.write(meta={"node_secret_n1": "s1", "node_secret_n2": "s2", "cluster_id": "c"})
    store.write(delete_meta=["node_secret_n1", "not-there"], meta={"x": "y"})
    store.close()
    meta = SqliteStore(tmp_path / "data").load().meta
    assert "node_secret_n1" not in meta
    assert meta["node_secret_n2"] == "s2" and meta["x"] == "y" and meta["cluster_id"] == "c"


def test_a_failed_write_deletes_no_meta(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data")
    store.write(services=[Service(id="s1", spec=ServiceSpec(name="web", image="nginx"))], meta={"k": "v"})
    clash = Service(id="s2", spec=ServiceSpec(name="web", image="nginx"))
    with pytest.raises(sqlite3.IntegrityError):
        store.write(services=[clash], delete_meta=["k"])
    assert store.load().meta["k"] == "v"


def test_a_state_file_of_the_previous_release_loads_with_its_constraints(tmp_path: Path) -> None:
    """The previous release stored each constraint as its text, and read it back split at a `!=` wherever
    it was. Its state files load, each constraint read at its first operator (the rule it had accepted);
    written again, a service keeps its constraints as key, operator and value."""
    data = tmp_path / "data"
    SqliteStore(data).close()
    old_spec = {
        "name": "web",
        "image": "nginx",
        "mode": "replicated",
        "replicas": 2,
        "command": [],
        "env": [],
        "labels": {"zone=a": "b"},  # a key the previous release let in through the API
        "ports": [{"published": 80, "target": 80, "protocol": "tcp", "mode": "ingress"}],
        "constraints": ["node.role==worker", "node.labels.zone!=east", "node.hostname==node-02!=x"],
        "placement_prefs": [],
        "max_replicas_per_node": 0,
        "restart_policy": {"condition": "any", "delay": 5.0, "max_attempts": 0, "window": 0.0},
        "stop_grace_period": 10.0,
        "force_update": 0,
    }
    doc = {"id": "s1", "version": 3, "created_at": 1.0, "updated_at": 2.0, "spec": old_spec}
    db = sqlite3.connect(data / STATE_FILE)
    db.execute("INSERT INTO services (id, name, doc) VALUES (?, ?, ?)", ("s1", "web", json.dumps(doc)))
    db.commit()
    db.close()
    store = SqliteStore(data)
    service = store.load().services["s1"]
    assert service.spec.constraints == (
        Constraint("node.role", ConstraintOp.EQ, "worker"),
        Constraint("node.labels.zone", ConstraintOp.NE, "east"),
        Constraint("node.hostname", ConstraintOp.EQ, "node-02!=x"),
    )
    assert service.spec.labels == {"zone=a": "b"} and service.version == 3
    store.write(services=[service])
    store.close()
    db = sqlite3.connect(data / STATE_FILE)
    (stored,) = db.execute("SELECT doc FROM services WHERE id='s1'").fetchone()
    db.close()
    assert json.loads(stored)["spec"]["constraints"] == [
        {"key": "node.role", "op": "==", "value": "worker"},
        {"key": "node.labels.zone", "op": "!=", "value": "east"},
        {"key": "node.hostname", "op": "==", "value": "node-02!=x"},
    ]
    assert SqliteStore(data).load().services["s1"].spec == service.spec


@pytest.mark.parametrize("bad", [{"key": "node.role", "op": "~=", "value": "x"}, {"key": "node.role", "op": "=="}])
def test_a_stored_constraint_that_is_not_one_is_a_corrupt_state_file(tmp_path: Path, bad: dict[str, str]) -> None:
    store = SqliteStore(tmp_path / "data")
    store.write(services=[Service(id="s1", spec=ServiceSpec(name="web", image="nginx"))])
    store.close()
    db = sqlite3.connect(tmp_path / "data" / STATE_FILE)
    (doc,) = db.execute("SELECT doc FROM services").fetchone()
    damaged = json.loads(doc)
    damaged["spec"]["constraints"] = [bad]
    db.execute("UPDATE services SET doc=?", (json.dumps(damaged),))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="is corrupt"):
        SqliteStore(tmp_path / "data").load()


@pytest.mark.reliability("Corrupt state file")
def test_corrupt_state_file_is_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / STATE_FILE).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"unreadable .*Restore it from a backup"):
        SqliteStore(data)


@pytest.mark.reliability("State file of another schema version")
def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    SqliteStore(data).close()
    db = sqlite3.connect(data / STATE_FILE)
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}.*newer than this one"):
        SqliteStore(data)


def test_a_failed_write_changes_nothing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data")
    good = Service(id="s1", spec=ServiceSpec(name="web", image="nginx"))
    store.write(services=[good])
    clash = Service(id="s2", spec=ServiceSpec(name="web", image="nginx"))  # the name is unique
    with pytest.raises(sqlite3.IntegrityError):
        store.write(services=[clash], meta={"x": "y"})
    loaded = store.load()
    assert list(loaded.services) == ["s1"] and "x" not in loaded.meta


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
@pytest.mark.reliability("Corrupt or missing state file at manager start")
def test_manager_start_on_a_bad_state_file_exits_once_with_a_message(tmp_path: Path, damage: str) -> None:
    data = tmp_path / "data"
    SqliteStore(data).close()
    save_settings(Settings(data_dir=data, listen_port=0), "127.0.0.1")
    if damage == "corrupt":
        (data / STATE_FILE).write_bytes(b"\x00garbage" * 512)
    else:
        (data / STATE_FILE).unlink()
    result = CliRunner().invoke(cli, ["manager", "--data-dir", str(data)])
    assert result.exit_code == EXIT_CONFIG  # systemd: RestartPreventExitStatus=78, so no crash loop
    assert ("missing" if damage == "missing" else "unreadable") in result.output
    assert "Traceback" not in result.output
