"""playbooks/site.yml against the lab's nodes over real SSH, with the inventory `pyswarm lab inventory` prints.

The lab's nodes are network namespaces of ONE machine: one /etc, one apt database, one /root, and no
systemd (the lab starts each node's dockerd and sshd itself). So:

1. a --check --diff run with the role's default paths (/etc/..., /opt/pyswarm, /root/.ssh): it must
   pass on every node and leave every one of those paths as it was;
2. a full run in which every path the role writes is redirected, per node, into this test's temporary
   directory (host_vars beside the inventory), with pyswarm_manage_services=false (no sshd reload,
   no dockerd restart) and no apt cache refresh; dockerd TCP+TLS on, pyswarm installed on the manager,
   the manager's SSH key and host-key scan on. Each node's changed tasks are checked one by one;
3. the same run again: changed=0 on every node (idempotent);
4. the results: the sshd drop-in is what `sshd -T` reads, the scanned known_hosts hold exactly the lab's
   host keys and ssh accepts them, the key is authorised on every node, the venv's pyswarm runs.

The lab's nodes cannot reach a package index: node-01's pip installs from a wheelhouse this test
fetches first (pyswarm_pip_extra_args="--no-index --find-links ...").

What this does not prove: that the three hosts are provisioned independently (one filesystem), that
apt installs anything (the packages are already here; the test skips rather than install them), or
that sshd reloads and dockerd restarts on the TLS drop-in (no systemd here; a Vagrant run does that).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyswarm.lab import Lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"
SITE = PLAYBOOKS / "site.yml"
# What the role installs with apt (pyswarm_packages, plus pyswarm_venv_packages where pyswarm is installed).
ROLE_PACKAGES = ("docker.io", "iptables", "python3", "openssh-client", "python3-venv", "python3-setuptools")
MANAGER = "node-01"
# One playbook run takes 1-2 minutes on the lab: far longer means a task hangs.
PLAYBOOK_TIMEOUT = 420

# Tasks (and handlers) that must report "changed" on the first full run, on every node, and on the
# manager only. Every path is new (a fresh temporary directory), nginx:latest is already loaded in the
# lab's engines (no pull), root needs no docker group, and service handlers are off.
CHANGED_ON_EVERY_NODE = {
    "Create sshd's drop-in directory",
    "Raise sshd's session limits for the manager's engine connections",
    "Enable IPv4 forwarding (sysctl.d file)",
    "Create the directory of dockerd's TLS files",
    "Copy dockerd's CA certificate, certificate and key",
    "Create docker.service's drop-in directory",
    "Make dockerd listen on TCP with TLS (systemd drop-in)",
    "Create the engine user's SSH directory",
    "Authorise the manager's key for the engine user",
    "Apply the IP forwarding sysctl",  # handler
}
CHANGED_ON_THE_MANAGER_ONLY = {
    "Create pyswarm's source directories",
    "Copy pyswarm's sources",
    "Install pyswarm into its venv",
    "Record the digest of the installed sources",
    "Put pyswarm on the PATH",
    "Create the manager's SSH directory",
    "Generate the manager's SSH key",
    "Trust the scanned host keys in the manager's known_hosts",
}
# Paths the role writes with its default variables; the check run must leave them as they were.
DEFAULT_PATHS = (
    "/etc/ssh/sshd_config.d/10-pyswarm.conf",
    "/etc/sysctl.d/90-pyswarm.conf",
    "/etc/docker/pyswarm-tls",
    "/etc/systemd/system/docker.service.d/10-pyswarm-tls.conf",
    "/opt/pyswarm",
    "/usr/local/bin/pyswarm",
    "/root/.ssh/id_ed25519",
    "/root/.ssh/id_ed25519.pub",
    "/root/.ssh/known_hosts",
    "/root/.ssh/authorized_keys",
)

RECAP_LINE = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+"
    r"failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)\s+ignored=(?P<ignored>\d+)",
    re.M,
)
TASK_HEADER = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(?:pyswarm : )?(?P<name>.+)\] \*+$")
CHANGED_LINE = re.compile(r"^changed: \[(?P<host>[^\]\s]+)(?: -> [^\]]+)?\]")


@dataclass
class Run:
    argv: list[str]
    returncode: int
    output: str
    recap: dict[str, dict[str, int]]
    changed: dict[str, set[str]]  # host -> names of the tasks and handlers that reported a change

    def explain(self) -> str:
        tail = "\n".join(self.output.splitlines()[-150:])
        return f"$ {' '.join(self.argv)}\nexit {self.returncode}\n...\n{tail}"


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    _, sep, recap = output.rpartition("PLAY RECAP")
    assert sep, "no PLAY RECAP in the output"
    return {m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"} for m in RECAP_LINE.finditer(recap)}


def parse_changed(output: str) -> dict[str, set[str]]:
    changed: dict[str, set[str]] = {}
    task = None
    for line in output.splitlines():
        if header := TASK_HEADER.match(line):
            task = header["name"]
        elif (hit := CHANGED_LINE.match(line)) and task is not None:
            changed.setdefault(hit["host"], set()).add(task)
    return changed


def run_logged(argv: list[str], env: dict[str, str], log: Path, timeout: float) -> tuple[int, str]:
    """Run argv, its output streamed to log with each line's elapsed seconds, so that a run that hangs
    still shows where: on timeout the process is killed and the failure quotes the last lines."""
    lines: list[str] = []
    start = time.monotonic()
    with log.open("w") as sink:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                sink.write(f"[{time.monotonic() - start:7.1f}s] {line}")
                sink.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            reader.join(10)
            tail = "".join(log.read_text().splitlines(keepends=True)[-60:])
            command = " ".join(argv)
            raise AssertionError(f"$ {command}\nstill running after {timeout:.0f} s; the last lines:\n{tail}") from None
        reader.join(30)
    return returncode, "".join(lines)


def ansible_playbook(inventory: Path, *args: str, log: Path) -> Run:
    exe = shutil.which("ansible-playbook")
    assert exe is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "DOCKER_"))}
    env.update(
        ANSIBLE_CONFIG=str(PLAYBOOKS / "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="default",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
    )
    argv = [exe, "-i", str(inventory), *args, str(SITE)]
    returncode, output = run_logged(argv, env, log, timeout=PLAYBOOK_TIMEOUT)
    run = Run(argv, returncode, output, {}, {})
    assert "PLAY RECAP" in output, run.explain()
    run.recap = parse_recap(output)
    run.changed = parse_changed(output)
    return run


def lab_inventory(lab: Lab) -> str:
    cp = subprocess.run(
        [sys.executable, "-m", "pyswarm", "lab", "inventory"], capture_output=True, text=True, timeout=60, check=True
    )
    text = cp.stdout
    for node in lab.nodes:
        assert f"{node.name} ansible_host={node.addr} ansible_user=root" in text, text
    return text


def snapshot(paths: Iterable[str]) -> dict[str, object]:
    """What exists at each path: missing, a symlink target, a file's digest and mode, or a tree's listing."""
    out: dict[str, object] = {}
    for p in map(Path, paths):
        if p.is_symlink():
            out[str(p)] = ("link", os.readlink(p))
        elif p.is_file():
            out[str(p)] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), stat.S_IMODE(p.stat().st_mode))
        elif p.is_dir():
            out[str(p)] = ("dir", sorted(str(c.relative_to(p)) for c in p.rglob("*")))
        else:
            out[str(p)] = None
    return out


def skip_unless_ready() -> None:
    for exe in ("ansible-playbook", "git", "openssl", "dpkg-query"):
        if shutil.which(exe) is None:
            pytest.skip(f"{exe} is not installed (scripts/setup installs ansible-core)")
    # The lab nodes run the modules with this machine's python3, on this machine's apt database.
    if subprocess.run(["/usr/bin/python3", "-c", "import apt"], capture_output=True).returncode != 0:
        pytest.skip("python3-apt is missing: ansible's apt module would install it on this machine")
    missing = [
        pkg
        for pkg in ROLE_PACKAGES
        if "install ok installed"
        not in subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True).stdout
    ]
    if missing:
        pytest.skip(f"a full run would install {', '.join(missing)} on this machine (run scripts/setup first)")
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the role copies pyswarm's tracked files (git ls-files)")


def make_tls_files(directory: Path) -> dict[str, Path]:
    """A CA and a server certificate, as docs/real-hosts.md makes them (smaller keys: faster)."""
    directory.mkdir()

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", "ca-key.pem",
            "-subj", "/CN=pyswarm test CA", "-out", "ca.pem")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-subj", "/CN=lab", "-out", "server.csr")
    (directory / "server.ext").write_text("subjectAltName = IP:192.168.39.1\nextendedKeyUsage = serverAuth\n")
    openssl("x509", "-req", "-days", "2", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
            "-CAcreateserial", "-extfile", "server.ext", "-out", "cert.pem")  # fmt: skip
    return {"ca": directory / "ca.pem", "cert": directory / "cert.pem", "key": directory / "key.pem"}


def make_wheelhouse(directory: Path) -> Path:
    """pyswarm's dependencies and build backend as wheels, fetched here in the host's namespace: the
    lab's nodes have no route off the lab network, so node-01's pip installs from this directory."""
    cp = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "-w", str(directory), str(REPO), "setuptools>=68", "wheel"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if cp.returncode != 0:
        pytest.skip(f"cannot fetch pyswarm's dependencies as wheels (package index unreachable?):\n{cp.stderr[-2000:]}")
    for built in directory.glob("pyswarm_mode-*.whl"):
        built.unlink()  # the playbook builds pyswarm from the sources it copies
    return directory


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")  # JSON is YAML


def assert_clean_recap(run: Run, hosts: list[str]) -> None:
    assert run.returncode == 0, run.explain()
    assert sorted(run.recap) == sorted(hosts), run.explain()
    for host, counts in run.recap.items():
        assert counts["unreachable"] == 0 and counts["failed"] == 0, f"{host}: {counts}\n{run.explain()}"
        assert counts["rescued"] == 0 and counts["ignored"] == 0, f"{host}: {counts}\n{run.explain()}"


def test_site_yml_on_the_lab_nodes(lab: Lab, tmp_path: Path) -> None:
    skip_unless_ready()
    hosts = [n.name for n in lab.nodes]
    assert hosts[0] == MANAGER
    inventory_text = lab_inventory(lab)
    tls = make_tls_files(tmp_path / "tls")
    wheels = make_wheelhouse(tmp_path / "wheels")
    common = {
        "pyswarm_manage_services": False,  # no systemd: the lab runs the nodes' sshd and dockerd
        "pyswarm_apt_update_cache": False,  # one apt database for all nodes, and it is this machine's
        "pyswarm_docker_tls": True,
        "pyswarm_docker_tls_ca": str(tls["ca"]),
        "pyswarm_docker_tls_cert": str(tls["cert"]),
        "pyswarm_docker_tls_key": str(tls["key"]),
        "pyswarm_install_manager": True,
        "pyswarm_pip_extra_args": f"--no-index --find-links {wheels}",
    }
    # Connected as root, without sudo (the lab has none): no become.
    no_become = ["-e", "ansible_become=false"]

    # 1. --check --diff with the default paths: passes everywhere, changes nothing.
    check_dir = tmp_path / "check"
    write_json(check_dir / "group_vars" / "all.yml", common)
    (check_dir / "lab.ini").write_text(inventory_text)
    before = snapshot(DEFAULT_PATHS)
    check = ansible_playbook(check_dir / "lab.ini", "--check", "--diff", *no_become, log=tmp_path / "check.log")
    assert_clean_recap(check, hosts)
    assert snapshot(DEFAULT_PATHS) == before, "a --check run changed this machine"
    # The TLS drop-in and its directory do not exist here: check mode must predict them, on every node.
    if before["/etc/systemd/system/docker.service.d/10-pyswarm-tls.conf"] is None:
        for host in hosts:
            assert "Make dockerd listen on TCP with TLS (systemd drop-in)" in check.changed.get(host, set()), host
        assert "+ExecStart=\n" in check.output, check.explain()
    assert check.changed.get(MANAGER, set()) >= {"Install pyswarm into its venv"} or before["/opt/pyswarm"], (
        check.explain()
    )

    # 2. A full run, every written path redirected into nodes/<node>/.
    full_dir = tmp_path / "full"
    nodes = tmp_path / "nodes"
    write_json(
        full_dir / "group_vars" / "all.yml",
        {
            **common,
            "pyswarm_manager_ssh_key": str(nodes / MANAGER / "manager-ssh" / "id_ed25519"),
            "pyswarm_manager_known_hosts": str(nodes / MANAGER / "manager-ssh" / "known_hosts"),
        },
    )
    for host in hosts:
        root = nodes / host
        root.mkdir(parents=True)
        write_json(
            full_dir / "host_vars" / f"{host}.yml",
            {
                "pyswarm_sshd_dropin": str(root / "sshd_config.d" / "10-pyswarm.conf"),
                "pyswarm_sysctl_file": str(root / "90-pyswarm.conf"),
                "pyswarm_docker_tls_dir": str(root / "docker-tls"),
                "pyswarm_docker_dropin": str(root / "docker.service.d" / "10-pyswarm-tls.conf"),
                "pyswarm_install_dir": str(root / "opt-pyswarm"),
                "pyswarm_bin_link": str(root / "pyswarm"),
                "pyswarm_engine_authorized_keys": str(root / "engine-ssh" / "authorized_keys"),
            },
        )
    (full_dir / "lab.ini").write_text(inventory_text)

    first = ansible_playbook(full_dir / "lab.ini", "--diff", *no_become, log=tmp_path / "run1.log")
    assert_clean_recap(first, hosts)
    for host in hosts:
        expected = CHANGED_ON_EVERY_NODE | (CHANGED_ON_THE_MANAGER_ONLY if host == MANAGER else set())
        got = first.changed.get(host, set())
        assert got == expected, (
            f"{host}: unexpectedly changed {sorted(got - expected)}, unexpectedly unchanged "
            f"{sorted(expected - got)}\n{first.explain()}"
        )
        assert first.recap[host]["changed"] == len(expected), f"{host}: {first.recap[host]}"
    assert snapshot(DEFAULT_PATHS) == before, "the redirected run wrote to a default path"

    # 3. Idempotent: the same run again changes nothing and runs no handler.
    second = ansible_playbook(full_dir / "lab.ini", "--diff", *no_become, log=tmp_path / "run2.log")
    assert_clean_recap(second, hosts)
    for host in hosts:
        assert second.recap[host]["changed"] == 0, f"{host}: {second.recap[host]}\n{second.explain()}"
        assert second.recap[host]["ok"] > 10, second.recap[host]
    assert second.changed == {}, second.explain()
    assert "RUNNING HANDLER" not in second.output, second.explain()

    # 4. What the run left.
    for host in hosts:
        root = nodes / host
        dropin = root / "sshd_config.d" / "10-pyswarm.conf"
        wrapper = root / "sshd_config"
        wrapper.write_text(f"Include {dropin}\n")
        effective = subprocess.run(["/usr/sbin/sshd", "-T", "-f", str(wrapper)], capture_output=True, text=True)
        assert effective.returncode == 0, effective.stderr
        assert "maxsessions 100" in effective.stdout.splitlines()
        assert "maxstartups 100:30:200" in effective.stdout.splitlines()

        assert (root / "90-pyswarm.conf").read_text().splitlines()[-1] == "net.ipv4.ip_forward = 1"
        forward = lab.exec(host, ["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip()
        assert forward == "1"

        unit = (root / "docker.service.d" / "10-pyswarm-tls.conf").read_text().splitlines()
        at = unit.index("ExecStart=")
        assert unit[at - 1] == "[Service]"
        tls_dir = root / "docker-tls"
        assert unit[at + 1] == (
            f"ExecStart=/usr/sbin/dockerd -H fd:// -H tcp://0.0.0.0:2376 --tlsverify --tlscacert={tls_dir}/ca.pem "
            f"--tlscert={tls_dir}/cert.pem --tlskey={tls_dir}/key.pem "
            "--containerd=/run/containerd/containerd.sock $DOCKER_OPTS"
        )
        for name, source, mode in (("ca.pem", "ca", 0o644), ("cert.pem", "cert", 0o644), ("key.pem", "key", 0o600)):
            assert (tls_dir / name).read_bytes() == tls[source].read_bytes()
            assert stat.S_IMODE((tls_dir / name).stat().st_mode) == mode, name

    # The manager's key, authorised for root on every node.
    key = nodes / MANAGER / "manager-ssh" / "id_ed25519"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    public = key.with_name("id_ed25519.pub").read_text().strip()
    assert public.startswith("ssh-ed25519 ") and public.endswith(f" pyswarm-manager@{MANAGER}")
    for host in hosts:
        authorized = nodes / host / "engine-ssh" / "authorized_keys"
        assert authorized.read_text().splitlines() == [public]
        assert stat.S_IMODE(authorized.stat().st_mode) == 0o600

    # The host keys scanned from node-01 are exactly the lab's, and ssh accepts them strictly.
    known_hosts = nodes / MANAGER / "manager-ssh" / "known_hosts"
    scanned = [line for line in known_hosts.read_text().splitlines() if line and not line.startswith("#")]
    assert sorted(scanned) == sorted(line for line in lab.known_hosts.read_text().splitlines() if line)
    for node in lab.nodes:
        ssh = subprocess.run(
            ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
             "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
             "-o", "IdentitiesOnly=yes", "-i", str(lab.identity_file), f"root@{node.addr}", "hostname"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert ssh.returncode == 0 and ssh.stdout.strip() == node.name, ssh.stderr

    # pyswarm in the manager's venv, linked onto the PATH; not on the workers.
    venv_pyswarm = nodes / MANAGER / "opt-pyswarm" / "venv" / "bin" / "pyswarm"
    assert Path(os.readlink(nodes / MANAGER / "pyswarm")) == venv_pyswarm
    help_text = subprocess.run([str(venv_pyswarm), "--help"], capture_output=True, text=True, timeout=60)
    assert help_text.returncode == 0 and "swarm" in help_text.stdout, help_text.stderr
    for host in hosts[1:]:
        assert not (nodes / host / "opt-pyswarm").exists()
