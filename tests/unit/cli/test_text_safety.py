"""What engines report and API clients set is shown as text (security review, problem 6): rich markup in a
hostname (`web[/b]`) neither crashes a table nor styles it, and terminal escape codes and control
characters never reach the terminal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pyswarm.cli import node_cmds, service_cmds
from pyswarm.cli.main import cli
from pyswarm.cli.text import cell, escaped, printable
from pyswarm.drivers.memory_engine import MemoryEngine
from tests.unit.inprocess import ApiServer, Cluster

MARKUP_HOST = "web[/b]"
ESCAPE_HOST = "evil\x1b[31mred\x1b]0;pwned\x07\x1b[0m"
ESCAPE_VERSION = "25.0\x1b[2J\x9b1m"
MARKUP_VERSION = "[bold red]24.0[/bold red] :fire:"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("web[/b]", "web[/b]"),
        ("a\x1b[31mred\x1b[0m", "ared"),  # CSI (colours)
        ("\x1b[2J\x1b[Hx", "x"),  # clear the screen, move the cursor
        ("\x1b]0;title\x07x", "x"),  # OSC: the window title
        ("\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\", "link"),  # OSC 8: a hyperlink
        ("a\x9b31mb", "ab"),  # 8-bit CSI
        ("a\x90dcs\x9cb", "ab"),  # 8-bit DCS ... ST
        ("x\x00y\x07z\x08\x7f", "xyz"),  # NUL, BEL, backspace, DEL
        ("a\rb", "a b"),  # a carriage return would overwrite the line
        ("one\ntwo\tthree", "one two three"),
        ("\u202eevil\u202c", "evil"),  # a right-to-left override
        ("\x1b", ""),
        ("\x1b[", ""),
        ("plain text: 80/tcp", "plain text: 80/tcp"),
    ],
)
def test_printable_keeps_the_text_and_drops_what_a_terminal_would_act_on(text: str, shown: str) -> None:
    assert printable(text, one_line=True) == shown
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in cell(text).plain + escaped(text))


def test_printable_keeps_lines_unless_told() -> None:
    assert printable("line 1\r\nline 2\n\tindented\x1b[0m") == "line 1\nline 2\n\tindented"


def test_cells_are_text_and_escaped_markup_stays_text() -> None:
    from rich.console import Console

    texts = ("web[/b]", "[bold]x[/bold]", "[link=http://evil]x[/link]", "end\\", "a\\[b]", "db:fire:")
    console = Console(width=200, color_system=None, highlight=False, record=True)  # emoji codes on
    for text in texts:
        console.print(cell(text))  # a Text: no markup, no emoji code read in it
    assert console.export_text().splitlines() == list(texts)
    console = Console(width=200, color_system=None, highlight=False, emoji=False, record=True)
    for text in texts:
        console.print(f"[dim]{escaped(text)}[/dim]")  # put in a markup string, escaped
    assert console.export_text().splitlines() == list(texts)


# --- through the real API: engines that report such hostnames and versions ----------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("text-safety") / "manager")
    for n, (hostname, version) in enumerate([(MARKUP_HOST, MARKUP_VERSION), (ESCAPE_HOST, ESCAPE_VERSION)]):
        url = f"ssh://root@10.0.0.{5 + n}"
        cluster.aliases[url] = MemoryEngine(url, hostname=hostname, version=version)
        cluster.manager.registration.add_node(url, f"10.0.0.{5 + n}", None)
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def server(cluster: Cluster) -> Iterator[ApiServer]:
    with ApiServer(cluster.manager) as server:
        yield server


def _pyswarm(cluster: Cluster, server: ApiServer, tmp_path: Path, *args: str) -> str:
    env = {
        "PYSWARM_HOST": server.url,
        "PYSWARM_CA": server.ca_file,
        "PYSWARM_TOKEN": cluster.token("client"),
        "PYSWARM_CONFIG": str(tmp_path / "config.json"),
        "PYSWARM_DATA_DIR": str(tmp_path / "state"),
        "COLUMNS": "200",
    }
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def _assert_shown_as_text(output: str) -> None:
    assert "\x1b" not in output and "\x9b" not in output and "\x07" not in output
    assert "pwned" not in output  # the OSC's text (a window title) is dropped with it


def test_node_ls_shows_engine_hostnames_and_versions_literally(
    cluster: Cluster, server: ApiServer, tmp_path: Path
) -> None:
    output = _pyswarm(cluster, server, tmp_path, "node", "ls")
    _assert_shown_as_text(output)
    rows = {line.split()[1]: line for line in output.splitlines()[1:] if line.strip()}
    assert MARKUP_HOST in rows  # not read as a closing tag (which crashed the table)
    assert MARKUP_VERSION in rows[MARKUP_HOST]  # no style taken, no emoji made
    assert "evilred" in rows and "25.0" in rows["evilred"]
    assert {"node-01", "node-02", "node-03"} <= set(rows)


def test_node_inspect_pretty_and_info_show_them_literally(cluster: Cluster, server: ApiServer, tmp_path: Path) -> None:
    ids = [n.id for n in cluster.manager.state.nodes.values() if n.hostname in (MARKUP_HOST, ESCAPE_HOST)]
    output = _pyswarm(cluster, server, tmp_path, "node", "inspect", "--pretty", *ids)
    _assert_shown_as_text(output)
    assert f"Hostname:\t\t{MARKUP_HOST}\n" in output and "Hostname:\t\tevilred\n" in output
    _assert_shown_as_text(_pyswarm(cluster, server, tmp_path, "info"))


# --- task errors, service names, images, labels: what the API answers ----------------------------------


class FakeApi:
    """The API's answers for `service ls`, `service ps` and `node ps`."""

    task: dict[str, Any] = {
        "id": "t" * 25,
        "service_id": "s" * 25,
        "slot": 1,
        "node_id": "n" * 25,
        "name": "web[/i].1",
        "node": ESCAPE_HOST,
        "desired_state": "running",
        "state": "rejected",
        "state_changed_at": 0.0,
        "created_at": 0.0,
        "error": "No such image: \x1b[31mnginx[/red]\x1b[0m\nsecond line",
        "ports": ["*:80->80/tcp"],
    }
    service: dict[str, Any] = {
        "id": "s" * 25,
        "spec": {
            "name": "web[/i]",
            "mode": "replicated",
            "replicas": 1,
            "max_replicas_per_node": 0,
            "image": "nginx\x1b[5m",
            "ports": [],
            "labels": {"zone": "[/b]\x1b[31m"},
        },
        "running": 0,
        "desired": 1,
    }

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def get(self, path: str, **kwargs: object) -> Any:
        if path == "/services":
            return [self.service]
        if path.endswith("/tasks"):
            return [self.task]
        return self.service


@pytest.mark.parametrize(
    "args",
    [("service", "ls"), ("service", "ps", "web"), ("service", "ps", "--no-trunc", "web"), ("node", "ps", "x")],
)
def test_task_errors_and_service_fields_are_shown_literally(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: tuple[str, ...]
) -> None:
    monkeypatch.setattr(service_cmds, "Api", FakeApi)
    monkeypatch.setattr(node_cmds, "Api", FakeApi)
    env = {"PYSWARM_DATA_DIR": str(tmp_path / "state"), "COLUMNS": "200"}
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    _assert_shown_as_text(result.output)
    if args[:2] == ("service", "ls"):
        assert "web[/i]" in result.output and "nginx" in result.output
    else:
        assert "web[/i].1" in result.output and "evilred" in result.output
        assert '"No such image: nginx[/red] second line"' in result.output  # one line, literally
