"""The state store: durable, private, and clear about files it cannot use."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from pyswarm.cli.main import cli
from pyswarm.manager.daemon import EXIT_CONFIG, save_settings
from pyswarm.manager.settings import Settings
from pyswarm.manager.store import SCHEMA_VERSION, STATE_FILE, SqliteStore, StoreError
from pyswarm.model import PortConfig, Service, ServiceSpec


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


def test_loose_permissions_are_tightened_at_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    SqliteStore(data).close()
    os.chmod(data, 0o755)
    os.chmod(data / STATE_FILE, 0o644)
    SqliteStore(data).close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / STATE_FILE).stat().st_mode) == 0o600


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
