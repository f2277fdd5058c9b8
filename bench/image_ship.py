"""`python -m bench image-ship`: shipping an image to the nodes without a registry. `pyswarm image push` (one
`docker save` streamed through the manager to every node's load at once) against `docker save IMAGE | docker -H
NODE load` run by hand to each node, one node after another and all at once, over each transport the nodes offer
(the lab's: their unix sockets, and ssh:// as the manager reaches them). The image is removed from the nodes
before every run; runs rotate their order; the load average is kept beside each time.

The image (default: one layer of --size-mb random bytes, which no compression or dedup makes smaller) lives in
a source engine: --source, or a scratch dockerd the benchmark starts in this host's namespace (no bridge, no
iptables rules, nothing of the lab's touched). The swarm: --pyswarm-config (a client config of a running manager
that drives the nodes), or, on the lab, one the benchmark makes and removes (`swarm init` on node-01, the
others join).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.common import ROOT, environment
from bench.cpu import load_average, wait_quiet

GOAL = 1.1  # pyswarm's time, at most this many times the best by-hand time
DOCKERD = "/usr/sbin/dockerd"
RUN_TIMEOUT = 900.0


class ShipError(Exception):
    """A step of the benchmark failed; the message says which."""


@dataclass(frozen=True)
class ShipArgs:
    size_mb: int = 128
    image: str = ""  # ship this image of the source engine instead of building one
    source: str = ""  # the engine the image is saved from (a docker -H URL); default: a scratch dockerd
    # Per transport, the nodes' engine URLs in the same order; default: the lab's (unix sockets, ssh://).
    transports: dict[str, tuple[str, ...]] = field(default_factory=dict)
    pyswarm_config: str = ""  # a client config of a running manager that drives these nodes
    repeat: int = 2
    quiet_wait: float = 60.0
    keep_lab: bool = False


def transport_sets(node_lists: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """`--nodes URL,URL,...` (one per transport) as {transport: urls}; the transport is the URLs' scheme."""
    sets: dict[str, tuple[str, ...]] = {}
    for item in node_lists:
        urls = tuple(u.strip() for u in item.split(",") if u.strip())
        schemes = {u.split("://", 1)[0] for u in urls}
        if not urls or len(schemes) != 1 or "://" not in urls[0]:
            raise SystemExit(f"--nodes wants engine URLs of one scheme, comma-separated, not {item!r}")
        if sets and len(urls) != len(next(iter(sets.values()))):
            raise SystemExit("every --nodes must list the same nodes, in the same order")
        sets[schemes.pop()] = urls
    return sets


def variants(transports: Sequence[str]) -> list[str]:
    return ["pyswarm", *(f"by-hand {mode} {t}" for t in transports for mode in ("serial", "parallel"))]


# --- the run --------------------------------------------------------------------------------------------


def run(args: ShipArgs, console: Console) -> dict[str, Any]:
    """Every run of every variant; the document of their records and the summary."""
    document: dict[str, Any] = {"kind": "image-ship", "created_at": time.time(), "environment": environment()}
    document["args"] = asdict(args)
    with contextlib.ExitStack() as stack:
        lab: Any = None if (args.transports and args.pyswarm_config) else stack.enter_context(_lab(args, console))
        transports = dict(args.transports) or {
            "unix": tuple(n.docker_host for n in lab.nodes),
            "ssh": tuple(n.engine_url for n in lab.nodes),
        }
        source = args.source or stack.enter_context(scratch_dockerd())
        image = ensure_image(source, args)
        document["image"] = image
        console.print(f"[bold]image-ship[/] {image['ref']} ({image['size'] / 1e6:.0f} MB) from {source} to "
                      f"{len(next(iter(transports.values())))} nodes, {args.repeat} rounds")  # fmt: skip
        env = {"PYSWARM_CONFIG": args.pyswarm_config} if args.pyswarm_config else stack.enter_context(_swarm(lab))
        clear = next(iter(transports.values()))
        runs = []
        names = variants(list(transports))
        for rep in range(args.repeat):
            for variant in names[rep % len(names) :] + names[: rep % len(names)]:
                remove_image(clear, image["id"])
                quiet = wait_quiet(console, 0.3, args.quiet_wait)
                record = _one_run(variant, rep, source, image, transports, env, clear)
                record["quiet"] = quiet
                runs.append(record)
                shown = f"{record['seconds']:.2f} s" if "error" not in record else f"[red]{record['error']}[/]"
                console.print(f"  round {rep + 1} {variant}: {shown}  (load {record['loadavg_after'][0]:.2f})")
        remove_image(clear, image["id"])
    document["runs"] = runs
    document["summary"] = summary(runs)
    return document


def _one_run(
    variant: str,
    rep: int,
    source: str,
    image: dict[str, Any],
    transports: dict[str, tuple[str, ...]],
    env: dict[str, str],
    clear: Sequence[str],
) -> dict[str, Any]:
    record: dict[str, Any] = {"variant": variant, "round": rep + 1, "loadavg_before": load_average()}
    try:
        if variant == "pyswarm":
            record["seconds"] = push(source, image["ref"], env)
        else:
            _, mode, transport = variant.split()
            record["seconds"] = by_hand(source, image["ref"], transports[transport], parallel=mode == "parallel")
        missing = [url for url in clear if not has_image(url, image["id"])]
        if missing:
            raise ShipError(f"the image is not on {', '.join(missing)} afterwards")
    except (ShipError, subprocess.TimeoutExpired) as exc:
        record["error"] = str(exc)[:500]
    record["loadavg_after"] = load_average()
    return record


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant: best and median; pyswarm's best against the best by-hand best (and per transport)."""
    by_variant: dict[str, list[float]] = {}
    for record in runs:
        if "error" not in record:
            by_variant.setdefault(record["variant"], []).append(float(record["seconds"]))
    figures = {
        name: {"best_s": min(times), "median_s": statistics.median(times), "runs": len(times)}
        for name, times in by_variant.items()
    }
    result: dict[str, Any] = {"variants": figures, "goal_ratio": GOAL}
    by_hand = {name: f["best_s"] for name, f in figures.items() if name.startswith("by-hand")}
    if "pyswarm" in figures and by_hand:
        best_name = min(by_hand, key=lambda name: by_hand[name])
        result["best_by_hand"] = best_name
        result["ratio"] = figures["pyswarm"]["best_s"] / by_hand[best_name]
        result["goal_met"] = result["ratio"] <= GOAL
        per_transport: dict[str, float] = {}
        for name, best in by_hand.items():
            transport = name.split()[-1]
            per_transport[transport] = min(best, per_transport.get(transport, best))
        result["ratio_by_transport"] = {t: figures["pyswarm"]["best_s"] / b for t, b in per_transport.items()}
    return result


def render(document: dict[str, Any], console: Console) -> None:
    result = document["summary"]
    table = Table(title=f"Shipping {document['image']['ref']} ({document['image']['size'] / 1e6:.0f} MB) to the nodes")
    for column in ("variant", "best", "median", "runs", "x best by-hand", "load avg (1 min)"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    best_hand = result["variants"].get(result.get("best_by_hand", ""), {}).get("best_s")
    for name in variants(sorted({r["variant"].split()[-1] for r in document["runs"] if r["variant"] != "pyswarm"})):
        figures = result["variants"].get(name)
        loads = [r["loadavg_after"][0] for r in document["runs"] if r["variant"] == name]
        if figures is None:
            table.add_row(name, "[red]failed[/]", "", "0", "", "")
            continue
        ratio = f"{figures['best_s'] / best_hand:.2f}" if best_hand else ""
        mean_load = f"{statistics.mean(loads):.2f}" if loads else ""
        table.add_row(name, f"{figures['best_s']:.2f} s", f"{figures['median_s']:.2f} s", str(figures["runs"]),
                      ratio, mean_load)  # fmt: skip
    console.print(table)
    if "ratio" in result:
        met = "[green]met[/]" if result["goal_met"] else "[red]not met[/]"
        by_transport = ", ".join(f"{t}: {r:.2f}x" for t, r in sorted(result["ratio_by_transport"].items()))
        console.print(
            f"pyswarm image push: {result['ratio']:.2f}x the best by-hand time ({result['best_by_hand']}); "
            f"goal ≤ {GOAL}x: {met}. Against the best by-hand run per transport: {by_transport}"
        )


def failed(document: dict[str, Any]) -> bool:
    return any("error" in record for record in document["runs"])


# --- what is timed ----------------------------------------------------------------------------------------


def push(source: str, ref: str, env: dict[str, str]) -> float:
    """`pyswarm image push` from the source engine, as an operator runs it (a fresh CLI process)."""
    command = [sys.executable, "-m", "pyswarm", "image", "push", "-q", ref]
    full_env = {**os.environ, **env, "DOCKER_HOST": source}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    began = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=RUN_TIMEOUT, check=False)
    seconds = time.monotonic() - began
    if done.returncode != 0:
        raise ShipError(f"pyswarm image push exited {done.returncode}: {(done.stderr or done.stdout).strip()[-400:]}")
    return seconds


def by_hand(source: str, ref: str, nodes: Sequence[str], parallel: bool) -> float:
    """`docker -H SOURCE save REF | docker -H NODE load` to every node: one after another, or all at once."""
    began = time.monotonic()
    if parallel:
        pipes = [_pipe(source, ref, node) for node in nodes]
        for pipe in pipes:
            _finish(*pipe)
    else:
        for node in nodes:
            _finish(*_pipe(source, ref, node))
    return time.monotonic() - began


def _pipe(source: str, ref: str, node: str) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], str]:
    save = subprocess.Popen(["docker", "-H", source, "save", ref], stdout=subprocess.PIPE)
    load = subprocess.Popen(
        ["docker", "-H", node, "load", "-q"], stdin=save.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert save.stdout is not None
    save.stdout.close()  # the load holds the pipe: a load that dies makes the save stop
    return save, load, node


def _finish(save: subprocess.Popen[bytes], load: subprocess.Popen[bytes], node: str) -> None:
    _, err = load.communicate(timeout=RUN_TIMEOUT)
    save.wait(timeout=RUN_TIMEOUT)
    if load.returncode or save.returncode:
        raise ShipError(f"docker save | docker -H {node} load failed: {err.decode(errors='replace').strip()[-300:]}")


# --- the image and the engines ----------------------------------------------------------------------------


def has_image(url: str, image_id: str) -> bool:
    done = subprocess.run(["docker", "-H", url, "image", "inspect", image_id], capture_output=True, check=False)
    return done.returncode == 0


def remove_image(urls: Sequence[str], image_id: str) -> None:
    for url in urls:
        subprocess.run(["docker", "-H", url, "rmi", "-f", image_id], capture_output=True, check=False, timeout=120)
        if has_image(url, image_id):
            raise ShipError(f"cannot remove {image_id[:19]} from {url} (a container uses it?)")


def ensure_image(source: str, args: ShipArgs) -> dict[str, Any]:
    """The image to ship, on the source engine: --image, or a random one of --size-mb (made once)."""
    ref = args.image or f"pyswarm-bench/ship:{args.size_mb}m"
    info = _inspect(source, ref)
    if info is None:
        if args.image:
            raise ShipError(f"no image {ref} on {source}")
        with tempfile.TemporaryDirectory(prefix="pyswarm-bench-image-") as tmp:
            archive = Path(tmp) / "image.tar"
            random_image(archive, ref, args.size_mb * 1_000_000)
            subprocess.run(["docker", "-H", source, "load", "-q", "-i", str(archive)], check=True, capture_output=True)
        info = _inspect(source, ref)
        if info is None:
            raise ShipError(f"loading the generated image into {source} did not give {ref}")
    return {"ref": ref, "id": info["Id"], "size": int(info.get("Size") or 0)}


def random_image(path: Path, ref: str, size: int) -> None:
    """A `docker save` archive of one image with one layer: a file of `size` random bytes, written in pieces."""
    layer_path = path.with_name("layer.tar")
    with tarfile.open(layer_path, "w") as layer:
        info = tarfile.TarInfo("blob")
        info.size, info.mode, info.mtime = size, 0o644, 1_700_000_000
        layer.addfile(info, _RandomFile(size))
    digest = hashlib.sha256()
    with open(layer_path, "rb") as f:
        while piece := f.read(1 << 20):
            digest.update(piece)
    rootfs = {"type": "layers", "diff_ids": [f"sha256:{digest.hexdigest()}"]}
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/blob"]}, "rootfs": rootfs}
    config_bytes = json.dumps(config).encode()
    image_id = hashlib.sha256(config_bytes).hexdigest()
    manifest = [{"Config": f"{image_id}.json", "RepoTags": [ref], "Layers": ["layer/layer.tar"]}]
    with tarfile.open(path, "w") as tar:
        tar.add(layer_path, "layer/layer.tar")
        for name, data in ((f"{image_id}.json", config_bytes), ("manifest.json", json.dumps(manifest).encode())):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    layer_path.unlink()


class _RandomFile(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return os.urandom(n)


def _inspect(url: str, ref: str) -> dict[str, Any] | None:
    done = subprocess.run(["docker", "-H", url, "image", "inspect", ref], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found[0] if found else None


@contextlib.contextmanager
def scratch_dockerd() -> Iterator[str]:
    """A dockerd of the benchmark's own in this host's namespace (root): no bridge, no iptables rules; its
    directories are removed afterwards. Yields its URL."""
    if os.geteuid() != 0 or not os.access(DOCKERD, os.X_OK):
        raise ShipError("no --source given, and starting a scratch dockerd needs root and dockerd")
    root = Path(tempfile.mkdtemp(prefix="pyswarm-bench-source-", dir="/var/tmp"))
    exec_root = Path(tempfile.mkdtemp(prefix="psb-", dir="/run"))  # containerd's sockets want a short path
    url = f"unix://{exec_root}/docker.sock"
    (root / "daemon.json").write_text(json.dumps({"deprecated-key-path": str(root / "key.json")}))
    argv = [DOCKERD, "--config-file", str(root / "daemon.json"), "--data-root", str(root / "data"),
            "--exec-root", str(exec_root), "-H", url, "--pidfile", str(exec_root / "pid"), "--bridge=none",
            "--iptables=false", "--ip-masq=false"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
    with open(root / "dockerd.log", "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "-H", url, "version"], capture_output=True, check=False).returncode:
            if process.poll() is not None or time.monotonic() > deadline:
                raise ShipError(f"the scratch dockerd did not start: see {root / 'dockerd.log'}")
            time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        if process.poll() is None:
            process.kill()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(exec_root, ignore_errors=True)


@contextlib.contextmanager
def _lab(args: ShipArgs, console: Console) -> Iterator[Any]:
    from bench.swarm.runner import ensure_lab

    lab, brought_up = ensure_lab(console)
    try:
        yield lab
    finally:
        if brought_up and not args.keep_lab:
            lab.down()


@contextlib.contextmanager
def _swarm(lab: Any) -> Iterator[dict[str, str]]:
    """A pyswarm swarm of the lab's nodes for the run (node-01 manages); the client environment to reach it."""
    from bench.swarm.config import SwarmArgs
    from bench.swarm.observe import Engines
    from bench.swarm.systems import PyswarmCluster

    cluster = PyswarmCluster(lab, Engines(lab), SwarmArgs())
    try:
        cluster.setup()
        yield dict(cluster.env)
    finally:
        cluster.teardown()
