"""`python -m bench`'s one argument parser: every command, its flags and their defaults (the README and docs
cite them), and what `swarm` / `mesh` make of them. Nothing is run."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench.__main__ import _swarm_args, build_parser
from bench.mesh import MeshArgs
from bench.swarm.config import SwarmArgs

BENCH = Path(__file__).resolve().parents[3] / "bench"

MESH_DEFAULTS = {
    "mesh_rounds": 5,
    "mesh_duration": 10.0,
    "mesh_connections": 32,
    "mesh_threads": 2,
    "new_connections": False,
    "pyswarm_env": [],
    "pyswarm_init_args": "",
    "keep_lab": False,
    "quiet_wait": 60.0,
    "json": None,
}
DEFAULTS = {
    "sim": {"scenario": None, "nodes": None, "tasks": None, "services": None, "timeout": 600.0, "json": None},
    "idle": {
        "duration": 60.0,
        "nodes": 3,
        "tasks": 100,
        "services": 10,
        "settle": 5.0,
        "lab": False,
        "lab_dir": None,
        "node": "node-01",
        "pid": None,
        "json": None,
    },
    "swarm": {
        "repeat": 3,
        "scenarios": "create,scale-up,scale-down,node-failure,mesh",
        "systems": "swarm,pyswarm,engines",
        "replicas": 30,
        "scale_to": 90,
        "timeout": 120.0,
        "no_floor": False,
        **MESH_DEFAULTS,
    },
    "mesh": MESH_DEFAULTS,
    "image-ship": {
        "size_mb": 128,
        "image": "",
        "source": "",
        "nodes": [],
        "pyswarm_config": "",
        "repeat": 2,
        "quiet_wait": 60.0,
        "keep_lab": False,
        "json": None,
    },
}


def _parse(*argv: str) -> dict[str, object]:
    options = vars(build_parser().parse_args(list(argv)))
    options.pop("command")
    return options


def test_one_parser_has_every_command() -> None:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == {"sim", "idle", "swarm", "mesh", "image-ship", "_run"}


@pytest.mark.parametrize("command", sorted(DEFAULTS))
def test_defaults(command: str) -> None:
    assert _parse(command) == DEFAULTS[command]


def test_sim_and_idle_flags() -> None:
    sim = _parse("sim", "--scenario", "a", "--scenario", "b", "--nodes", "10", "--tasks", "100", "--services", "5")
    assert sim["scenario"] == ["a", "b"] and (sim["nodes"], sim["tasks"], sim["services"]) == (10, 100, 5)
    idle = _parse("idle", "--lab", "--lab-dir", "/x", "--node", "node-02", "--pid", "7", "--json", "o.json")
    assert (idle["lab"], idle["lab_dir"], idle["node"], idle["pid"]) == (True, Path("/x"), "node-02", 7)
    assert idle["json"] == Path("o.json")


def test_swarm_flags_become_its_args() -> None:
    argv = ["swarm", "--repeat", "1", "--scenarios", "create, node-failure", "--systems", "pyswarm,swarm"]
    argv += ["--replicas", "6", "--scale-to", "12", "--timeout", "30", "--no-floor", "--mesh-rounds", "2"]
    argv += ["--pyswarm-env", "A=1", "--pyswarm-env", "B=x=y", "--pyswarm-init-args", "--heartbeat 0.5s"]
    args, systems = _swarm_args(build_parser().parse_args(argv))
    assert systems == ("pyswarm", "swarm")
    assert args == SwarmArgs(
        repeat=1,
        scenarios=("create", "node-failure"),
        replicas=6,
        scale_to=12,
        timeout=30.0,
        floor=False,
        mesh=MeshArgs(rounds=2),
        pyswarm_env={"A": "1", "B": "x=y"},
        pyswarm_init_args=("--heartbeat", "0.5s"),
    )


def test_mesh_is_pyswarm_alone_once() -> None:
    args, systems = _swarm_args(build_parser().parse_args(["mesh", "--new-connections", "--quiet-wait", "5"]))
    assert systems == ("pyswarm",)
    assert args == SwarmArgs(repeat=1, scenarios=("mesh",), mesh=MeshArgs(new_connections=True), quiet_wait=5.0)


@pytest.mark.parametrize(
    "argv",
    [
        ["swarm", "--scenarios", "create,bogus"],
        ["swarm", "--systems", "kubernetes"],
        ["swarm", "--scenarios", ","],
        ["swarm", "--repeat", "0"],
        ["mesh", "--pyswarm-env", "NOEQUALS"],
    ],
)
def test_bad_swarm_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        _swarm_args(build_parser().parse_args(argv))


def test_no_other_module_parses_arguments() -> None:
    parsers = [
        path.relative_to(BENCH).as_posix()
        for path in BENCH.rglob("*.py")
        if "add_argument(" in path.read_text() or "ArgumentParser(" in path.read_text()
    ]
    assert parsers == ["__main__.py"]
