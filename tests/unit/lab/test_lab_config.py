"""Lab pieces that need neither root nor dockerd: addressing, state, SSH files, parsing, image."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from pyswarm.lab import Lab, LabConfig, LabError, LabNotFound
from pyswarm.lab import image as lab_image
from pyswarm.lab.config import node_index, node_name
from pyswarm.lab.ssh import (
    BEGIN_MARK,
    END_MARK,
    render_sshd_config,
    ssh_config_block,
    strip_block,
    with_block,
)
from pyswarm.lab.sysutil import is_under, parse_mountinfo


def test_default_addressing(tmp_path: Path) -> None:
    cfg = LabConfig(lab_dir=tmp_path)
    assert cfg.host_addr == "192.168.39.254"
    nodes = cfg.node_list
    assert [n.name for n in nodes] == ["node-01", "node-02", "node-03"]
    assert [n.addr for n in nodes] == ["192.168.39.1", "192.168.39.2", "192.168.39.3"]
    n2 = nodes[1]
    assert n2.veth_host == "psw-node-02" and len(n2.veth_host) <= 15
    assert n2.socket == tmp_path / "nodes/node-02/docker.sock"
    assert n2.docker_host == f"unix://{tmp_path}/nodes/node-02/docker.sock"
    assert n2.engine_url == "ssh://root@192.168.39.2"
    assert n2.bip == "172.18.2.1/24"
    assert str(n2.exec_root) == "/run/pyswarm-lab/n2"
    assert n2.env == {
        "DOCKER_HOST": n2.docker_host,
        "PYSWARM_NODE": "node-02",
        "PYSWARM_DATA_DIR": str(tmp_path / "nodes/node-02/pyswarm"),
    }


def test_other_subnet_and_limits(tmp_path: Path) -> None:
    cfg = LabConfig(lab_dir=tmp_path, subnet="10.99.0.0/16", nodes=5)
    assert cfg.host_addr == "10.99.255.254"
    assert cfg.node_list[-1].addr == "10.99.0.5"
    assert len(LabConfig(lab_dir=tmp_path, nodes=99).node_list[-1].veth_host) <= 15
    with pytest.raises(LabError):
        LabConfig(lab_dir=tmp_path, nodes=0)
    with pytest.raises(LabError):
        LabConfig(lab_dir=tmp_path, nodes=100)
    with pytest.raises(LabError):
        LabConfig(lab_dir=tmp_path, subnet="192.168.39.1/24")  # host bits set
    with pytest.raises(LabError):
        LabConfig(lab_dir=tmp_path, subnet="10.0.0.0/30")


def test_socket_paths_must_fit(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="too long"):
        LabConfig(lab_dir=tmp_path / ("x" * 90))
    with pytest.raises(LabError, match="too long"):
        LabConfig(lab_dir=tmp_path, run_dir=Path("/run") / ("y" * 40))


def test_lab_dir_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYSWARM_LAB_DIR", str(tmp_path / "x"))
    assert LabConfig().lab_dir == tmp_path / "x"
    monkeypatch.delenv("PYSWARM_LAB_DIR")
    assert LabConfig().lab_dir == Path("/var/lib/pyswarm-lab")


def test_node_names() -> None:
    assert node_name(7) == "node-07"
    assert node_index("node-07") == 7
    assert node_index("node-100") == 100
    for bad in ("node-1", "node-01; rm -rf /", "../node-01", "node-0a"):
        with pytest.raises(LabError):
            node_index(bad)


def test_state_roundtrip(tmp_path: Path) -> None:
    cfg = LabConfig(lab_dir=tmp_path, subnet="10.1.2.0/24", nodes=4)
    cfg.save()
    loaded = LabConfig.load(tmp_path)
    assert loaded == cfg
    assert Lab.load(tmp_path).nodes == cfg.node_list


def test_state_missing_or_corrupt(tmp_path: Path) -> None:
    with pytest.raises(LabNotFound):
        LabConfig.load(tmp_path)
    (tmp_path / "state.json").write_text("{nope")
    with pytest.raises(LabError):
        LabConfig.load(tmp_path)
    state = LabConfig(lab_dir=tmp_path).to_state()
    state["nodes"] = ["node-01", "node-03"]
    (tmp_path / "state.json").write_text(json.dumps(state))
    with pytest.raises(LabError, match="corrupt"):
        LabConfig.load(tmp_path)


def test_node_lookup_validates_names(tmp_path: Path) -> None:
    lab = Lab(LabConfig(lab_dir=tmp_path, nodes=2))
    assert lab.node("node-02").addr == "192.168.39.2"
    for bad in ("node-03", "node-1", "-rf", ""):
        with pytest.raises(LabError, match="no node"):
            lab.node(bad)


def test_inventory(tmp_path: Path) -> None:
    lab = Lab(LabConfig(lab_dir=tmp_path, nodes=2))
    assert lab.inventory().splitlines() == [
        "[nodes]",
        f"node-01 ansible_host=192.168.39.1 ansible_user=root ansible_ssh_private_key_file={tmp_path}/id_ed25519"
        f" ansible_ssh_common_args='-o UserKnownHostsFile={tmp_path}/known_hosts'",
        f"node-02 ansible_host=192.168.39.2 ansible_user=root ansible_ssh_private_key_file={tmp_path}/id_ed25519"
        f" ansible_ssh_common_args='-o UserKnownHostsFile={tmp_path}/known_hosts'",
    ]


def test_sshd_config(tmp_path: Path) -> None:
    cfg = LabConfig(lab_dir=tmp_path)
    n = cfg.node(2)
    lines = render_sshd_config(cfg, n).splitlines()
    for want in (
        "ListenAddress 192.168.39.2",
        f"PidFile {n.sshd_pidfile}",
        f"HostKey {n.host_key}",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        f"AuthorizedKeysFile {tmp_path}/authorized_keys",
        "StrictModes no",
        "MaxSessions 100",
        "MaxStartups 200:30:400",
        f"SetEnv DOCKER_HOST={n.docker_host} PYSWARM_NODE=node-02 PYSWARM_DATA_DIR={n.pyswarm_data_dir}",
    ):
        assert want in lines


def test_marker_blocks() -> None:
    user = "Host *\n    ServerAliveInterval 30\n"
    block = ["Host 192.168.39.1", "    User root"]
    merged = with_block(user, block, first=True)
    assert merged.startswith(BEGIN_MARK + "\nHost 192.168.39.1\n")
    assert merged.endswith(user)
    # Idempotent: merging again replaces the block, never duplicates it.
    assert with_block(merged, block, first=True) == merged
    assert merged.count(BEGIN_MARK) == 1
    assert strip_block(merged).lstrip("\n") == user
    kh = with_block("10.0.0.1 ssh-ed25519 AAA", ["192.168.39.1 ssh-ed25519 BBB"], first=False)
    assert kh == f"10.0.0.1 ssh-ed25519 AAA\n{BEGIN_MARK}\n192.168.39.1 ssh-ed25519 BBB\n{END_MARK}\n"
    assert strip_block(kh) == "10.0.0.1 ssh-ed25519 AAA\n"
    assert strip_block("a\n" + BEGIN_MARK + "\nleft over, no END\n") == "a\n"


def test_ssh_config_block(tmp_path: Path) -> None:
    cfg = LabConfig(lab_dir=tmp_path, nodes=2)
    assert ssh_config_block(cfg, cfg.node_list) == [
        "Host 192.168.39.1 192.168.39.2",
        "    User root",
        f"    IdentityFile {tmp_path}/id_ed25519",
        "    IdentitiesOnly yes",
        f"    UserKnownHostsFile {tmp_path}/known_hosts ~/.ssh/known_hosts",
        "    StrictHostKeyChecking yes",
    ]


def test_mountinfo_parsing() -> None:
    text = (
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        "45 27 0:4 uts:[4026532318] /var/lib/pyswarm-lab/nodes/node-01/uts rw - nsfs nsfs rw\n"
        r"46 27 0:50 / /var/lib/pyswarm-lab/a\040b rw - tmpfs tmpfs rw" + "\n"
    )
    points = parse_mountinfo(text)
    assert points == ["/", "/var/lib/pyswarm-lab/nodes/node-01/uts", "/var/lib/pyswarm-lab/a b"]
    assert is_under(points[1], [Path("/var/lib/pyswarm-lab")])
    assert not is_under("/var/lib/pyswarm-lab2/x", ["/var/lib/pyswarm-lab"])
    assert is_under("/run/pyswarm-lab", ["/run/pyswarm-lab/"])


def test_cli_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyswarm.cli.lab_cmds import lab

    monkeypatch.setattr("os.geteuid", lambda: 1000)
    for args in (["up"], ["ls"], ["down"], ["exec", "node-01", "--", "true"], ["kill", "node-01"]):
        res = CliRunner().invoke(lab, args)
        assert res.exit_code == 1, args
        assert "needs root" in res.output


def test_image_archive_is_loadable_and_reproducible(tmp_path: Path) -> None:
    libs = [Path("/bin/true")]  # any file: only the tar layout is checked here
    if not lab_image.NGINX.exists():
        pytest.skip("nginx-light not installed")
    one, id1 = lab_image.build_archive(lab_image.build_layer(libs, b"\x7fELF fake"))
    two, id2 = lab_image.build_archive(lab_image.build_layer(libs, b"\x7fELF fake"))
    assert one == two and id1 == id2  # same inputs, same image ID on every node
    with tarfile.open(fileobj=io.BytesIO(one)) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert manifest[0]["RepoTags"] == ["nginx:latest"]
        config = json.loads(tar.extractfile(manifest[0]["Config"]).read())  # type: ignore[union-attr]
        layer_tar = tar.extractfile(manifest[0]["Layers"][0]).read()  # type: ignore[union-attr]
    assert config["config"]["Cmd"] == ["/usr/sbin/nginx", "-g", "daemon off;"]
    assert config["config"]["ExposedPorts"] == {"80/tcp": {}}
    assert config["config"]["StopSignal"] in ("SIGTERM", "SIGQUIT")
    with tarfile.open(fileobj=io.BytesIO(layer_tar)) as rootfs:
        names = set(rootfs.getnames())
        assert {"usr/sbin/nginx", "usr/local/bin/udp-echo", "etc/nginx/nginx.conf", "etc/passwd"} <= names
        assert "bin/true" in names
        tmp = rootfs.getmember("tmp")
        assert tmp.isdir() and tmp.mode == 0o1777
        conf = rootfs.extractfile("etc/nginx/nginx.conf").read().decode()  # type: ignore[union-attr]
    directives = [line.split()[0] for line in conf.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert "load_module" not in directives and "daemon" not in directives  # CMD passes daemon off
    assert "$hostname" in conf
