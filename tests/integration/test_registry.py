"""Images from a registry on the lab: a real one (Debian's docker-registry, TLS, htpasswd auth) on the host's
bridge address. A tag is pinned to its digest at create, the nodes pull it with the credentials given by
--with-registry-auth, and without them the tag stays with docker's warning."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.swarm import PYSWARM, Swarm, wait_until

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
USER, PASSWORD = "labuser", "lab-registry-pw"


def _certificate(addr: str, directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the registry's address (its own CA, as docker's certs.d expects)."""
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, addr)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(addr))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def registry(swarm: Swarm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(host:port, a docker client config dir logged in to it)."""
    if not os.access(REGISTRY_BIN, os.X_OK) or shutil.which("htpasswd") is None:
        pytest.skip("docker-registry and htpasswd are not installed (apt-get install docker-registry apache2-utils)")
    addr = swarm.lab.config.host_addr  # the host's address on the lab bridge
    host = f"{addr}:5443"  # not 5000: a distribution-installed registry service may hold that one
    work = tmp_path_factory.mktemp("registry")
    cert, key = _certificate(addr, work)
    subprocess.run(["htpasswd", "-Bbc", str(work / "htpasswd"), USER, PASSWORD], check=True, capture_output=True)
    (work / "config.yml").write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {work / 'data'}\n"
        f"http:\n  addr: {host}\n  tls:\n    certificate: {cert}\n    key: {key}\n"
        f"auth:\n  htpasswd:\n    realm: lab\n    path: {work / 'htpasswd'}\n"
    )
    # Every lab dockerd reads /etc/docker/certs.d (the nodes share the host's filesystem).
    certs_d = Path("/etc/docker/certs.d") / host
    certs_d.mkdir(parents=True, exist_ok=True)
    shutil.copy(cert, certs_d / "ca.crt")
    server = subprocess.Popen([REGISTRY_BIN, "serve", str(work / "config.yml")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    client = work / "docker-client"
    try:
        login = ["docker", "--config", str(client), "login", "-u", USER, "--password-stdin", host]
        wait_until(lambda: swarm.lab.exec("node-01", login, input=PASSWORD, check=False).returncode == 0,
                   timeout=30, what="docker login to the lab registry")  # fmt: skip
        yield host, client
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(certs_d, ignore_errors=True)


def test_a_registry_image_is_pinned_and_pulled_with_the_clients_credentials(
    swarm: Swarm, registry: tuple[str, Path]
) -> None:
    host, client = registry
    image = f"{host}/lab/app:1"
    docker = ["docker", "--config", str(client)]
    swarm.lab.exec("node-01", [*docker, "tag", "busybox:latest", image])
    swarm.lab.exec("node-01", [*docker, "push", image])
    swarm.lab.exec("node-01", ["docker", "rmi", image])  # no node has it now: each must pull it
    env = {**os.environ, **swarm.env, "DOCKER_CONFIG": str(client)}
    try:
        created = subprocess.run(
            [PYSWARM, "service", "create", "--name", "pulled", "--mode", "global", "--with-registry-auth", image,
             "sleep", "1d"], env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert created.returncode == 0, created.stdout + created.stderr
        assert "could not be accessed on a registry" not in created.stderr
        pinned = swarm.json("service", "ls")[0]["spec"]["image"]
        assert pinned.startswith(f"{image}@sha256:"), pinned
        assert sorted(t["node"] for t in swarm.running_tasks("pulled")) == ["node-01", "node-02", "node-03"]
        # Without the credentials the registry answers nothing: the tag stays, with docker's warning.
        anonymous = swarm.cli("service", "create", "-d", "--name", "anon", image, "sleep", "1d")
        assert "could not be accessed on a registry to record" in anonymous.stderr
        assert json.loads(swarm.cli("service", "inspect", "anon").stdout)[0]["spec"]["image"] == image
        assert PASSWORD not in swarm.cli("service", "inspect", "pulled").stdout
    finally:
        for name in ("pulled", "anon"):
            swarm.cli("service", "rm", name, check=False)
        wait_until(lambda: not any(swarm.all_containers().values()), what="containers removed")
        for node in ("node-01", "node-02", "node-03"):
            swarm.lab.exec(node, ["docker", "rmi", image], check=False)
