"""A task's secret and config files on its node: through a real LocalHost in a temporary base directory
(the tmpfs mount itself only as root), with the data on stdin and never in an argv."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from pyswarm.drivers.host.local import LocalHost
from pyswarm.drivers.host.runner import CommandResult
from pyswarm.drivers.host.task_files import (
    TaskFile,
    TaskFilesError,
    ensure_base,
    remove_task_files,
    task_files,
    write_task_files,
)
from pyswarm.model import FileReference

ROOT = os.geteuid() == 0
SECRET = b"do-not-show-me-\x00\xff"
TASK = "k3j2h4g5f6d7s8a9q0w1e2r3t"


class Recorder:
    """A LocalHost that remembers every argv and stdin it was given; with `results`, answers those instead
    (in turn, the last one again), and runs nothing."""

    def __init__(self, *results: CommandResult) -> None:
        self.host = LocalHost(sudo=False)
        self.calls: list[tuple[list[str], bytes | None]] = []
        self.results = list(results)

    def run(self, argv: Sequence[str], stdin: bytes | None = None, timeout: float = 30) -> CommandResult:
        self.calls.append((list(argv), stdin))
        if self.results:
            return self.results.pop(0) if len(self.results) > 1 else self.results[0]
        return self.host.run(argv, stdin=stdin, timeout=timeout)

    def close(self) -> None:
        pass


def _owner() -> tuple[int, int]:
    """As root, owners other than ours (tar keeps them); as a user, tar makes the files ours."""
    return (1234, 5678) if ROOT else (os.getuid(), os.getgid())


def test_files_are_written_with_their_modes_and_owners_and_the_data_only_on_stdin(tmp_path: Path) -> None:
    base = str(tmp_path / "base")
    runner = Recorder()
    uid, gid = _owner()
    files = [TaskFile("0", SECRET, uid, gid, 0o400), TaskFile("1", b"config\n", 0, 0, 0o644)]
    paths = write_task_files(runner, TASK, files, base, mount=False)
    assert paths == (f"{base}/{TASK}/0", f"{base}/{TASK}/1")
    assert Path(paths[0]).read_bytes() == SECRET and Path(paths[1]).read_bytes() == b"config\n"
    info = os.stat(paths[0])
    assert stat.S_IMODE(info.st_mode) == 0o400 and (info.st_uid, info.st_gid) == (uid, gid)
    assert stat.S_IMODE(os.stat(paths[1]).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(f"{base}/{TASK}").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(base).st_mode) == 0o700
    for argv, _ in runner.calls:
        assert not any(b"do-not-show-me" in word.encode() for word in argv)
    assert any(stdin and SECRET in stdin for _, stdin in runner.calls)


def test_writing_again_replaces_the_files(tmp_path: Path) -> None:
    base = str(tmp_path / "base")
    runner = LocalHost(sudo=False)
    write_task_files(runner, TASK, [TaskFile("0", b"old", *_owner(), 0o400)], base, mount=False)
    [path] = write_task_files(runner, TASK, [TaskFile("0", b"new", *_owner(), 0o440)], base, mount=False)
    assert Path(path).read_bytes() == b"new" and stat.S_IMODE(os.stat(path).st_mode) == 0o440


def test_remove_takes_the_tasks_directory_away_and_is_idempotent(tmp_path: Path) -> None:
    base = str(tmp_path / "base")
    runner = LocalHost(sudo=False)
    write_task_files(runner, TASK, [TaskFile("0", b"x", *_owner())], base, mount=False)
    write_task_files(runner, "othertask", [TaskFile("0", b"y", *_owner())], base, mount=False)
    remove_task_files(runner, TASK, base)
    remove_task_files(runner, TASK, base)
    assert sorted(os.listdir(base)) == ["othertask"]


@pytest.mark.parametrize(
    ("task_id", "name", "base"),
    [
        ("../etc", "0", "/run/x"),
        ("a/b", "0", "/run/x"),
        ("", "0", "/run/x"),
        (".", "0", "/run/x"),
        ("-rf", "0", "/run/x"),
        (TASK, "..", "/run/x"),
        (TASK, "a/b", "/run/x"),
        (TASK, ".hidden", "/run/x"),
        (TASK, "0", "run/x"),
        (TASK, "0", "/"),
        (TASK, "0", "/run/../etc"),
        (TASK, "0", "/run/x/"),
        (TASK, "0", "/run/a b"),
    ],
)
def test_path_tricks_are_refused_before_any_command(task_id: str, name: str, base: str) -> None:
    runner = Recorder()
    with pytest.raises(ValueError, match="invalid"):
        write_task_files(runner, task_id, [TaskFile(name, b"x")], base)
    if name == "0":
        with pytest.raises(ValueError, match="invalid"):
            remove_task_files(runner, task_id, base)
    assert runner.calls == []


def test_duplicate_names_and_out_of_range_fields_are_refused() -> None:
    runner = Recorder()
    with pytest.raises(ValueError, match="not unique"):
        write_task_files(runner, TASK, [TaskFile("0", b"x"), TaskFile("0", b"y")], "/run/x")
    with pytest.raises(ValueError, match="out of range"):
        write_task_files(runner, TASK, [TaskFile("0", b"x", mode=0o4755)], "/run/x")
    assert runner.calls == []


def test_a_refusal_by_the_node_names_the_command_never_the_data() -> None:
    runner = Recorder(CommandResult(1, b"", b"mkdir: Permission denied"))
    with pytest.raises(TaskFilesError, match="mkdir -p -m 0700 -- /run/x: exit 1: mkdir: Permission denied") as caught:
        write_task_files(runner, TASK, [TaskFile("0", SECRET)], "/run/x", mount=False)
    assert "do-not-show-me" not in str(caught.value)


def test_the_base_is_mounted_only_when_it_is_not_a_mount_point_yet() -> None:
    ok, not_mounted = CommandResult(0, b"", b""), CommandResult(32, b"", b"")
    mounted = Recorder(ok)
    ensure_base(mounted, "/run/pyswarm-secrets")
    assert [argv for argv, _ in mounted.calls] == [["mountpoint", "-q", "--", "/run/pyswarm-secrets"]]
    unmounted = Recorder(not_mounted, ok)
    ensure_base(unmounted, "/run/pyswarm-secrets")
    assert [argv for argv, _ in unmounted.calls] == [
        ["mountpoint", "-q", "--", "/run/pyswarm-secrets"],
        ["mkdir", "-p", "-m", "0700", "--", "/run/pyswarm-secrets"],
        ["mount", "-t", "tmpfs", "-o", "nodev,nosuid,noexec,mode=0700", "tmpfs", "/run/pyswarm-secrets"],
    ]


def test_task_files_are_named_by_position_with_the_references_owner_and_mode() -> None:
    refs = [
        (FileReference(name="pw", target="pw", uid="33", gid="44", mode=0o400), b"a"),
        (FileReference("c", "/c"), b"b"),
    ]
    assert task_files(refs) == (TaskFile("0", b"a", 33, 44, 0o400), TaskFile("1", b"b", 0, 0, 0o444))


@pytest.fixture
def tmpfs_base(tmp_path: Path) -> Iterator[str]:
    base = str(tmp_path / "secrets")
    yield base
    while subprocess.run(["mountpoint", "-q", base], check=False).returncode == 0:
        subprocess.run(["umount", base], check=True)


@pytest.mark.skipif(not ROOT, reason="mounting a tmpfs needs root: the other tests write to a plain directory")
def test_as_root_the_base_is_a_private_tmpfs_mounted_once(tmpfs_base: str) -> None:
    runner = LocalHost(sudo=False)
    write_task_files(runner, TASK, [TaskFile("0", SECRET, mode=0o400)], tmpfs_base)
    write_task_files(runner, "second", [TaskFile("0", b"x")], tmpfs_base)
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    ours = [fields for fields in mounts if fields[1] == tmpfs_base]
    assert len(ours) == 1 and ours[0][2] == "tmpfs"
    assert {"nodev", "nosuid", "noexec"} <= set(ours[0][3].split(","))
    assert stat.S_IMODE(os.stat(tmpfs_base).st_mode) == 0o700
    assert Path(tmpfs_base, TASK, "0").read_bytes() == SECRET
