"""Docker swarm mode and pyswarm side by side on the same lab engines: `python -m bench swarm`.

Each repetition sets up one cluster at a time on the same three lab dockerds, runs the scenarios, and tears
it down again; the order of the systems rotates every repetition, so that a slow spell of the machine
does not always fall on the same one:

- swarm: `docker swarm init --advertise-addr` on node-01, `docker swarm join` on the others, services made
  with `docker service create -d --no-resolve-image` (the lab's dockerds run with
  DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1, so no registry is asked), `docker service scale -d`;
- pyswarm: `pyswarm swarm init` / `swarm join` / `service create -d` / `service scale -d`, with its
  defaults (1 s heartbeat, 8 engine requests in flight per node);
- engines alone: the same containers made straight through each node's docker API (unix socket, 8 in
  flight per node, no orchestrator): what the engines themselves take, the reference no orchestrator that
  drives them can beat by much.

Every command runs inside node-01 (`lab exec`), as an operator would type it there, and is timed from its
start: CLI start-up counts for both systems (the rows "CLI ..." show what it costs). "Done" is what the
engines report, never what an orchestrator claims: the benchmark counts containers by service label
through each node's unix socket from the host (every 100 ms; that works while a node's link is cut, and
does not add SSH latency of its own). Node status comes from the orchestrator's API (swarm's over
node-01's socket, pyswarm's over HTTP), which is what `node ls` shows.

Scenarios: create (N replicas until N run), scale-up (to M), scale-down (to 0, until no container is left),
node-failure (`lab cut` of node-03 until N run on the survivors; also until the node is marked Down), and
mesh (bench/mesh.py: pyswarm's ingress throughput, and the evidence that swarm's mesh cannot run here).

The modules: config (what a run is asked to do), observe (the engines as the benchmark sees them), systems
(swarm, pyswarm, engines alone), scenarios, runner (the lab, the repetitions, the JSON document) and report
(the side-by-side table).
"""
