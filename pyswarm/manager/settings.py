"""Every tunable of the manager, in one place: the persisted Settings, and the fixed budgets and delays
that the rooms use (grouped by the room that uses them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType


@dataclass
class Settings:
    """What `swarm init` fixes and manager.json keeps."""

    data_dir: Path
    advertise_addr: str = "127.0.0.1"
    listen_port: int = 2377
    heartbeat: float = 0.5
    heartbeat_misses: int = 3  # or 2 when the second is a host that refuses TCP (see heartbeat.py)
    resync_interval: float = 10.0
    history_limit: int = 5
    per_node_parallelism: int = 8  # below sshd's MaxSessions
    engine_timeout: float = 30.0
    engine_workers: int = 64  # threads for engine calls, shared by all nodes


# --- heartbeat (heartbeat.py) ---------------------------------------------------------------------------
# The heartbeat's and the resyncs' budgets over all nodes: past 500 nodes (at the default 500 ms) the
# heartbeat period stretches, and past 1,000 nodes the resync interval, so that the manager's steady work
# does not grow with the cluster. Over SSH each ping and each listing is a request that paramiko encrypts in
# this process; at 5,000 nodes the period is 5 s (swarm's own default) instead of 10,000 pings a second.
MAX_PINGS_PER_SECOND = 1000
MAX_RESYNCS_PER_SECOND = 100
# A loaded dockerd (dozens of starts on 2 cores) can take seconds to answer a ping, and over SSH a reconnect
# starts a login shell on the node first: a slow engine, not a dead one. With 2 s, three slow answers in a row
# still marked busy nodes Down in the SIGKILL trials on a slower machine; 5 s is swarm's own heartbeat, so a
# busy engine is never declared Down sooner than swarm would. A host that is gone is found sooner all the
# same: its TCP check fails while the ping waits (heartbeat.py).
PING_TIMEOUT_MIN = 5.0
PING_TIMEOUT_PERIODS = 1.5
# A ping unanswered for a period gets its host checked with a TCP connect of at most this long.
HOST_CHECK_TIMEOUT = 0.5
PING_THREADS = 16
PINGS_PER_BATCH = 32  # healthy nodes answer fast: a batch goes one after another
BEAT_WAKES_PER_PERIOD = 4

# --- engine jobs (executor.py, engine_jobs.py) ----------------------------------------------------------
# An engine call at least this long (seconds) is a slow engine's: the node's other starts go in parallel.
SLOW_START = 0.05
# How long starts stall after an engine turned unreachable, before they are retried.
UNREACHABLE_RETRY_DELAY = 1.0
DEFAULT_STOP_GRACE = 10  # seconds, for a container whose service is gone
PROBE_TIMEOUT_MAX = 15.0  # a join's probe of the engine it names
# A LAN host's kernel accepts a TCP connect in milliseconds, however loaded: half the request timeout,
# within these bounds.
CONNECT_TIMEOUT_MIN = 0.5
CONNECT_TIMEOUT_MAX = 3.0

# --- events (events.py) ---------------------------------------------------------------------------------
EVENT_STREAM_TIMEOUT = 3600.0  # an event stream waits long for its next event
EVENT_RECONNECT_DELAY = 1.0

# --- nodes (nodes.py) -----------------------------------------------------------------------------------
# How long `swarm leave` waits for the node's containers to be removed; the rest goes on behind.
LEAVE_WAIT = 5.0
LEAVE_POLL = 0.02

# --- reconcile loop (orchestrator.py) -------------------------------------------------------------------
# Under a stream of changes a pass waits as long as the last one took, within these bounds.
PASS_DEBOUNCE_MIN = 0.01
PASS_DEBOUNCE_MAX = 0.2
FAILED_PASS_PAUSE = 0.5
STOP_JOIN_TIMEOUT = 5.0

# --- task writer (writer.py) ----------------------------------------------------------------------------
# How long (seconds) the writer holds back the row of a task being started, for its outcome.
INFLIGHT_ROW_WAIT = 0.5
# Parts (of a statement's rows each) taken per lock hold, and how far past them the writer looks for rows
# that are not held back.
WRITER_PARTS_PER_TAKE = 8
WRITER_SCAN_FACTOR = 8
WRITE_RETRY_DELAY = 1.0
WRITER_STOP_TIMEOUT = 30.0

# --- services (services.py) -----------------------------------------------------------------------------
# Ports no service may publish, and why: the routing mesh takes a published port over on every node (a
# host-mode port on the nodes its tasks run on), and these are how the manager reaches the engines, or the
# ports of a distributed state store's etcd. Each node's own engine port (from its engine URL: an SSH port
# other than 22, a tcp:// engine's port) and the manager's listen port are refused too (services.py).
RESERVED_PORTS: Mapping[int, str] = MappingProxyType(
    {
        22: "SSH's port: the manager reaches ssh:// engines through it",
        2375: "the Docker Engine API's port (plain TCP): the manager reaches tcp:// engines through it",
        2376: "the Docker Engine API's port (TLS): the manager reaches tcp:// engines through it",
        2379: "etcd's client port, for a distributed state store",
        2380: "etcd's peer port, for a distributed state store",
    }
)
# Engines pick tasks' host ports from Linux's ephemeral range; a mesh port there would capture them.
EPHEMERAL_PORTS = range(32768, 61000)

# --- logs (logs.py) -------------------------------------------------------------------------------------
LOG_LINES_BUFFERED = 1000

# --- images (images.py) ---------------------------------------------------------------------------------
# After a registry failed to answer a node's pull, pulls from it are skipped this long: nodes get the image
# from a node that has it at once. A pull that gives no answer for PULL_ANSWER_TIMEOUT s has no registry.
PULL_ANSWER_TIMEOUT = 15.0
NO_PULL_RETRY = 60.0
RESOLVE_TIMEOUT = 5.0  # a tag's digest lookup at service create/update
# Image streams fed to several nodes: pieces queued per node (shared bytes: the whole feed holds about this
# many pieces), and how long a node may take no data before it is dropped, so it does not hold up the others.
FEED_QUEUE_PIECES = 8
FEED_STALL_TIMEOUT = 60.0
