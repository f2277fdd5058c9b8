"""Offline checks of playbooks/ and vagrant/: structure, syntax, lint, and the Vagrantfile's machines.

Tests that need a tool (ansible-playbook, ansible-lint, yamllint, ruby) skip with the reason when it is
missing; `scripts/setup` installs ansible-core and ansible-lint. The real run against lab nodes is in
tests/integration/test_playbooks.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pyswarm.lab import Lab, LabConfig

REPO = Path(__file__).resolve().parents[3]
PLAYBOOKS = REPO / "playbooks"
ROLE = PLAYBOOKS / "roles" / "pyswarm"
VAGRANTFILE = REPO / "vagrant" / "Vagrantfile"

# Keywords a task may carry besides its one action (Ansible's Task/Block/Handler attributes we use or
# might). Anything else in a task is its module.
TASK_KEYWORDS = {
    "name", "when", "loop", "loop_control", "with_items", "register", "notify", "listen", "become",
    "become_user", "changed_when", "failed_when", "check_mode", "diff", "vars", "delegate_to",
    "delegate_facts", "run_once", "tags", "no_log", "ignore_errors", "environment", "args", "until",
    "retries", "delay", "throttle", "any_errors_fatal", "block", "rescue", "always", "collections",
}  # fmt: skip


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install {'ruby' if name == 'ruby' else name}; scripts/setup)")
    return path


def ansible_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(PLAYBOOKS / "ansible.cfg"), ANSIBLE_NOCOLOR="1", NO_COLOR="1", TERM="dumb")
    return env


def task_files() -> list[Path]:
    return sorted([*ROLE.joinpath("tasks").glob("*.yml"), *ROLE.joinpath("handlers").glob("*.yml")])


def flatten(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for task in tasks:
        out.append(task)
        for key in ("block", "rescue", "always"):
            out.extend(flatten(task.get(key) or []))
    return out


def all_tasks() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in task_files():
        for task in flatten(yaml.safe_load(path.read_text()) or []):
            found.append((path, task))
    play = yaml.safe_load((PLAYBOOKS / "site.yml").read_text())
    for p in play:
        for key in ("pre_tasks", "tasks", "post_tasks", "handlers"):
            found.extend((PLAYBOOKS / "site.yml", t) for t in flatten(p.get(key) or []))
    return found


def action(task: dict[str, Any]) -> str:
    actions = [k for k in task if k not in TASK_KEYWORDS]
    if "block" in task:
        return "block"
    assert len(actions) == 1, f"task {task.get('name')!r}: expected one action, found {actions}"
    return actions[0]


# ------------------------------------------------------------------ structure (no tools needed)


def test_tasks_use_only_ansible_builtin_modules() -> None:
    tasks = all_tasks()
    assert len(tasks) > 20, "the role's tasks were not found"
    for path, task in tasks:
        name = action(task)
        if name == "block":
            continue
        assert name.startswith("ansible.builtin."), f"{path.name}: {task.get('name')!r} uses {name}"
        assert task.get("name"), f"{path.name}: a task without a name ({name})"


def test_commands_say_when_they_change_something() -> None:
    commands = 0
    for path, task in all_tasks():
        name = action(task)
        if name.rsplit(".", 1)[-1] not in ("command", "shell", "raw", "script"):
            continue
        commands += 1
        args = task[name] if isinstance(task[name], dict) else {}
        guarded = "changed_when" in task or "creates" in args or "removes" in args
        assert guarded, f"{path.name}: {task['name']!r} runs a command without changed_when/creates"
        assert name != "ansible.builtin.shell", f"{path.name}: {task['name']!r}: use command (argv), not shell"
    assert commands >= 5


def test_handlers_exist_for_every_notify() -> None:
    handlers = {h["name"] for h in yaml.safe_load((ROLE / "handlers" / "main.yml").read_text())}
    assert handlers == {"Reload sshd", "Apply the IP forwarding sysctl", "Restart dockerd"}
    notified = set()
    for _, task in all_tasks():
        notify = task.get("notify") or []
        notified.update([notify] if isinstance(notify, str) else notify)
    assert notified == handlers


def test_service_handlers_can_be_switched_off() -> None:
    """The lab has no systemd: every handler that touches a service obeys pyswarm_manage_services."""
    for handler in yaml.safe_load((ROLE / "handlers" / "main.yml").read_text()):
        module = action(handler)
        if module in ("ansible.builtin.service", "ansible.builtin.systemd", "ansible.builtin.systemd_service"):
            assert handler.get("when") == "pyswarm_manage_services | bool", handler["name"]


def test_role_variables_are_prefixed() -> None:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert all(k.startswith("pyswarm_") for k in defaults), [k for k in defaults if not k.startswith("pyswarm_")]
    registered = {t["register"] for _, t in all_tasks() if "register" in t}
    assert registered and all(r.startswith("pyswarm_") for r in registered), registered
    # The defaults the brief fixes.
    assert defaults["pyswarm_docker_tls"] is False
    assert defaults["pyswarm_install_manager"] is False and defaults["pyswarm_install_workers"] is False
    assert defaults["pyswarm_sshd_max_sessions"] == 100
    assert defaults["pyswarm_manage_services"] is True


def test_templates_render_the_documented_settings() -> None:
    sshd = (ROLE / "templates" / "sshd-pyswarm.conf.j2").read_text()
    assert "MaxSessions {{ pyswarm_sshd_max_sessions }}" in sshd
    tls = (ROLE / "templates" / "docker-tls.conf.j2").read_text().splitlines()
    # The unit's ExecStart is reset before it is replaced: a second ExecStart= would be an error.
    i = tls.index("ExecStart=")
    assert tls[i - 1] == "[Service]"
    line = tls[i + 1]
    assert line.startswith(
        "ExecStart={{ pyswarm_dockerd }} -H fd:// -H tcp://{{ pyswarm_docker_tls_listen }} --tlsverify"
    )
    for flag in ("--tlscacert=", "--tlscert=", "--tlskey="):
        assert flag in line


# ------------------------------------------------------------------ ansible-playbook, ansible-lint, yamllint


def test_syntax_check_with_example_and_lab_inventories(tmp_path: Path) -> None:
    playbook = tool("ansible-playbook")
    lab_inventory = tmp_path / "lab.ini"
    lab_inventory.write_text(Lab(LabConfig(lab_dir=tmp_path / "lab")).inventory())
    for inventory in (PLAYBOOKS / "inventory.example.ini", lab_inventory):
        cp = subprocess.run(
            [playbook, "-i", str(inventory), "--syntax-check", str(PLAYBOOKS / "site.yml")],
            capture_output=True, text=True, env=ansible_env(), timeout=120,
        )  # fmt: skip
        assert cp.returncode == 0, f"{inventory.name}:\n{cp.stdout}\n{cp.stderr}"
        assert "playbook: " in cp.stdout
        assert "WARNING" not in cp.stderr, cp.stderr


def test_list_tasks_shows_the_role(tmp_path: Path) -> None:
    playbook = tool("ansible-playbook")
    cp = subprocess.run(
        [playbook, "-i", str(PLAYBOOKS / "inventory.example.ini"), "--list-tasks", "--list-hosts",
         str(PLAYBOOKS / "site.yml")],
        capture_output=True, text=True, env=ansible_env(), timeout=120,
    )  # fmt: skip
    assert cp.returncode == 0, cp.stderr
    for needle in ("node-01", "node-02", "node-03", "pyswarm : Raise sshd's session limits",
                   "pyswarm : Enable IPv4 forwarding (sysctl.d file)", "pyswarm : Install pyswarm",
                   "pyswarm : Give the manager SSH access to every node"):  # fmt: skip
        assert needle in cp.stdout, needle


def test_ansible_lint_has_no_findings() -> None:
    lint = tool("ansible-lint")
    cp = subprocess.run(
        [lint, "--offline", "--nocolor"],
        cwd=PLAYBOOKS, capture_output=True, text=True, env=ansible_env(), timeout=600,
    )  # fmt: skip
    out = cp.stdout + cp.stderr
    assert cp.returncode == 0, out
    assert re.search(r"Passed with production profile: 0 failure\(s\), 0 warning\(s\)", out), out


def test_yamllint_is_clean() -> None:
    yamllint = tool("yamllint")
    files = [str(p) for p in sorted(PLAYBOOKS.rglob("*.yml"))] + [str(PLAYBOOKS / ".ansible-lint")]
    cp = subprocess.run(
        [yamllint, "--strict", "-c", str(PLAYBOOKS / ".yamllint"), *files],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cp.returncode == 0, cp.stdout + cp.stderr


# ------------------------------------------------------------------ the Vagrantfile, under ruby with a stub

# A stand-in for Vagrant's config objects: records attribute assignments and block calls, then prints
# the machines as JSON. Enough to evaluate the Vagrantfile without Vagrant.
VAGRANT_STUB = r"""
require "json"
class Rec
  def initialize; @attrs = {}; @calls = []; end
  def method_missing(name, *args, **kw, &blk)
    s = name.to_s
    return @attrs[s.chomp("=")] = args.first if s.end_with?("=")
    return (@attrs[s] ||= Rec.new) if args.empty? && kw.empty? && blk.nil?
    child = Rec.new
    @calls << [s, args, kw, child]
    blk&.call(child)
    child
  end
  def respond_to_missing?(*) = true
  def to_h
    attrs = @attrs.transform_values { |v| v.is_a?(Rec) ? v.to_h : v }
    calls = @calls.map { |n, a, k, c| { "call" => n, "args" => a, "kw" => k, "body" => c.to_h } }
    { "attrs" => attrs, "calls" => calls }
  end
end
module Vagrant
  def self.configure(version)
    raise "unexpected version #{version}" unless version == "2"
    $root = Rec.new
    yield $root
  end
end
load ARGV[0]
puts JSON.generate($root.to_h)
"""


def vagrant_config(tmp_path: Path, **env: str) -> dict[str, Any]:
    ruby = tool("ruby")
    stub = tmp_path / "stub.rb"
    stub.write_text(VAGRANT_STUB)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYSWARM_")}
    cp = subprocess.run(
        [ruby, str(stub), str(VAGRANTFILE)], capture_output=True, text=True, env={**environ, **env}, timeout=60
    )
    assert cp.returncode == 0, cp.stderr
    return dict(json.loads(cp.stdout))


def machines(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    defined = [c for c in config["attrs"]["vm"]["calls"] if c["call"] == "define"]
    return {c["args"][0]: c["body"] for c in defined}


def providers(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["args"][0]: c["body"]["attrs"] for c in config["attrs"]["vm"]["calls"] if c["call"] == "provider"}


def private_ip(machine: dict[str, Any]) -> str:
    (net,) = [c for c in machine["attrs"]["vm"]["calls"] if c["call"] == "network"]
    assert net["args"] == ["private_network"]
    return str(net["kw"]["ip"])


def provisioners(machine: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in machine["attrs"]["vm"]["calls"] if c["call"] == "provision"]


def test_vagrantfile_ruby_syntax() -> None:
    ruby = tool("ruby")
    cp = subprocess.run([ruby, "-wc", str(VAGRANTFILE)], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0 and "Syntax OK" in cp.stdout, cp.stdout + cp.stderr
    assert cp.stderr == "", cp.stderr  # no warnings


def test_vagrantfile_defaults(tmp_path: Path) -> None:
    config = vagrant_config(tmp_path)
    assert config["attrs"]["vm"]["attrs"]["box"] == "debian/bookworm64"
    assert providers(config) == {
        "virtualbox": {"memory": 1024, "cpus": 1},
        "libvirt": {"memory": 1024, "cpus": 1},
    }
    nodes = machines(config)
    assert list(nodes) == ["node-01", "node-02", "node-03"]
    assert [private_ip(m) for m in nodes.values()] == ["192.168.56.11", "192.168.56.12", "192.168.56.13"]
    assert [m["attrs"]["vm"]["attrs"]["hostname"] for m in nodes.values()] == list(nodes)
    # One provisioning run, from the last machine, for all of them.
    assert provisioners(nodes["node-01"]) == [] and provisioners(nodes["node-02"]) == []
    (prov,) = provisioners(nodes["node-03"])
    assert prov["args"] == ["ansible"]
    ansible = prov["body"]["attrs"]
    assert ansible["limit"] == "all"
    assert Path(ansible["playbook"]) == PLAYBOOKS / "site.yml"
    assert Path(ansible["config_file"]) == PLAYBOOKS / "ansible.cfg"
    assert ansible["groups"] == {"managers": ["node-01"], "workers": ["node-02", "node-03"]}
    assert ansible["host_vars"] == {
        "node-01": {"pyswarm_addr": "192.168.56.11"},
        "node-02": {"pyswarm_addr": "192.168.56.12"},
        "node-03": {"pyswarm_addr": "192.168.56.13"},
    }
    assert ansible["extra_vars"] == {
        "pyswarm_src": str(REPO),
        "pyswarm_install_manager": True,
        "pyswarm_install_workers": True,
    }


def test_vagrantfile_environment_overrides(tmp_path: Path) -> None:
    config = vagrant_config(
        tmp_path,
        PYSWARM_BOX="generic/ubuntu2204",
        PYSWARM_MEMORY="2048",
        PYSWARM_CPUS="2",
        PYSWARM_SUBNET="192.168.39.0/24",
        PYSWARM_INSTALL="0",
    )
    assert config["attrs"]["vm"]["attrs"]["box"] == "generic/ubuntu2204"
    assert providers(config)["virtualbox"] == {"memory": 2048, "cpus": 2}
    assert providers(config)["libvirt"] == {"memory": 2048, "cpus": 2}
    nodes = machines(config)
    assert [private_ip(m) for m in nodes.values()] == ["192.168.39.11", "192.168.39.12", "192.168.39.13"]
    ansible = provisioners(nodes["node-03"])[0]["body"]["attrs"]
    assert ansible["extra_vars"]["pyswarm_install_manager"] is False

    config = vagrant_config(tmp_path, PYSWARM_IPS="10.7.0.5, 10.7.0.9")
    nodes = machines(config)
    assert [private_ip(m) for m in nodes.values()] == ["10.7.0.5", "10.7.0.9"]
    assert provisioners(nodes["node-01"]) == []
    ansible = provisioners(nodes["node-02"])[0]["body"]["attrs"]
    assert ansible["groups"] == {"managers": ["node-01"], "workers": ["node-02"]}

    assert list(machines(vagrant_config(tmp_path, PYSWARM_NODES="5"))) == [f"node-0{i}" for i in range(1, 6)]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PYSWARM_MEMORY": "lots"}, "bad PYSWARM_MEMORY"),
        ({"PYSWARM_CPUS": "0"}, "bad PYSWARM_CPUS"),
        ({"PYSWARM_SUBNET": "192.168.56.0/29"}, "do not fit"),
        ({"PYSWARM_SUBNET": "nonsense"}, "not a subnet"),
        ({"PYSWARM_IPS": "10.0.0.1,10.0.0.300"}, "bad address"),
        ({"PYSWARM_IPS": "10.0.0.1,10.0.0.1"}, "twice"),
    ],
)
def test_vagrantfile_rejects_bad_settings(tmp_path: Path, env: dict[str, str], message: str) -> None:
    ruby = tool("ruby")
    stub = tmp_path / "stub.rb"
    stub.write_text(VAGRANT_STUB)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYSWARM_")}
    cp = subprocess.run(
        [ruby, str(stub), str(VAGRANTFILE)], capture_output=True, text=True, env={**environ, **env}, timeout=60
    )
    assert cp.returncode != 0
    assert message in cp.stderr, cp.stderr
