"""`service`: create, ls, ps/tasks, inspect, update, scale, rm, logs."""

from __future__ import annotations

import time
from typing import Any

import click
from rich.live import Live
from rich.text import Text

from pyswarm.cli.client import Api, fail, print_json, ref_path
from pyswarm.cli.render import ago, console, short, table
from pyswarm.model import parse


def _path(ref: str) -> str:
    return ref_path(ref, "service reference")


def _parsed(func: Any, values: Any) -> Any:
    try:
        return func(values)
    except parse.SpecError as exc:
        fail(str(exc))


def _port_dict(text: str) -> dict[str, Any]:
    port = _parsed(parse.publish, text)
    return {
        "published": port.published,
        "target": port.target,
        "protocol": port.protocol.value,
        "mode": port.mode.value,
    }


def _ports_text(spec: dict[str, Any]) -> str:
    return ", ".join(
        f"*:{p['published']}->{p['target']}/{p['protocol']}" + (" (host)" if p["mode"] == "host" else "")
        for p in spec["ports"]
    )


def _replicas_text(service: dict[str, Any]) -> str:
    if service["spec"]["mode"] == "global":
        return f"{service['running']}/{service['desired']}"
    text = f"{service['running']}/{service['spec']['replicas']}"
    if service["spec"]["max_replicas_per_node"]:
        text += f" (max {service['spec']['max_replicas_per_node']} per node)"
    return text


@click.group()
def service() -> None:
    """Manage services."""


_create_options = [
    click.option("--replicas", default=None, help="Number of tasks."),
    click.option("-e", "--env", "env", multiple=True, help="Set environment variables."),
    click.option("-l", "--label", "labels", multiple=True, help="Service labels (key=value)."),
    click.option(
        "-p",
        "--publish",
        "publish",
        multiple=True,
        help="Publish a port: published:target[/udp], or published=..,target=..,protocol=..,mode=ingress|host.",
    ),
    click.option(
        "--constraint", "constraints", multiple=True, help="Placement constraints, e.g. node.hostname==node-01."
    ),
    click.option(
        "--placement-pref", "placement_prefs", multiple=True, help="Placement preference: spread=node.labels.KEY."
    ),
    click.option("--replicas-max-per-node", default=None, help="Maximum number of tasks per node (0 = unlimited)."),
    click.option("--restart-condition", default=None, help="Restart when condition is met: none, on-failure or any."),
    click.option("--restart-delay", default=None, help="Delay between restart attempts (ns|us|ms|s|m|h)."),
    click.option(
        "--restart-max-attempts", default=None, help="Maximum number of restarts before giving up (0 = unlimited)."
    ),
    click.option("--restart-window", default=None, help="Window used to evaluate the restart policy."),
    click.option("--stop-grace-period", default=None, help="Time to wait before force killing a container."),
    click.option(
        "-d", "--detach", is_flag=True, help="Exit immediately instead of waiting for the service to converge."
    ),
    click.option("-q", "--quiet", is_flag=True, help="Suppress progress output."),
]


def _with_options(options: list[Any]) -> Any:
    def decorate(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _int(text: str, what: str) -> int:
    if not text.isdigit():
        fail(f"invalid {what} {text!r}: must be a whole number")
    return int(text)


@service.command("create", context_settings={"ignore_unknown_options": False})
@click.option("--name", default=None, help="Service name.")
@click.option("--mode", type=click.Choice(["replicated", "global"]), default="replicated", show_default=True)
@_with_options(_create_options)
@click.option("--timeout", default="120s", show_default=True, help="How long to wait for convergence without -d.")
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def service_create(
    name: str | None,
    mode: str,
    replicas: str | None,
    env: tuple[str, ...],
    labels: tuple[str, ...],
    publish: tuple[str, ...],
    constraints: tuple[str, ...],
    placement_prefs: tuple[str, ...],
    replicas_max_per_node: str | None,
    restart_condition: str | None,
    restart_delay: str | None,
    restart_max_attempts: str | None,
    restart_window: str | None,
    stop_grace_period: str | None,
    detach: bool,
    quiet: bool,
    timeout: str,
    image: str,
    command: tuple[str, ...],
) -> None:
    """Create a new service."""
    if name is None:
        import secrets

        name = "svc-" + secrets.token_hex(4)
    if mode == "global" and replicas is not None:
        fail("replicas can only be used with replicated mode")
    spec: dict[str, Any] = {
        "name": _parsed(parse.service_name, name),
        "image": _parsed(parse.image, image),
        "mode": mode,
        "replicas": _parsed(parse.replicas, replicas) if replicas is not None else 1,
        "command": list(command),
        "env": [_parsed(parse.env, e) for e in env],
        "labels": dict(_parsed(parse.label, item) for item in labels),
        "ports": [_port_dict(item) for item in publish],
        "constraints": [str(_parsed(parse.constraint, c)) for c in constraints],
        "placement_prefs": [_parsed(parse.placement_pref, pref) for pref in placement_prefs],
        "max_replicas_per_node": _int(replicas_max_per_node, "--replicas-max-per-node") if replicas_max_per_node else 0,
        "restart_policy": {
            "condition": _parsed(parse.restart_condition, restart_condition).value if restart_condition else "any",
            "delay": _parsed(parse.duration, restart_delay) if restart_delay else 5.0,
            "max_attempts": _int(restart_max_attempts, "--restart-max-attempts") if restart_max_attempts else 0,
            "window": _parsed(parse.duration, restart_window) if restart_window else 0.0,
        },
        "stop_grace_period": _parsed(parse.duration, stop_grace_period) if stop_grace_period else 10.0,
    }
    try:
        parse.check_port_conflicts(_parsed(parse.publish, item) for item in publish)
    except parse.SpecError as exc:
        fail(str(exc))
    wait = _parsed(parse.duration, timeout)  # before anything is created
    api = Api()
    created = api.post("/services", spec)
    click.echo(created["id"])
    if not detach:
        _converge(api, created["id"], wait, quiet)


@service.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display IDs.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def service_ls(quiet: bool, fmt: str) -> None:
    """List services."""
    services = Api().get("/services")
    if fmt == "json":
        print_json(services)
        return
    if quiet:
        for item in services:
            click.echo(item["id"])
        return
    table(
        ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"],
        [
            [
                short(s["id"]),
                s["spec"]["name"],
                s["spec"]["mode"],
                _replicas_text(s),
                s["spec"]["image"],
                _ports_text(s["spec"]),
            ]
            for s in services
        ],
    )


def _state_text(task: dict[str, Any], now: float) -> str:
    return f"{task['state'].capitalize()} {ago(task['state_changed_at'], now)}"


def print_tasks(tasks: list[dict[str, Any]], no_trunc: bool, quiet: bool = False) -> None:
    if quiet:
        for task in tasks:
            click.echo(task["id"])
        return
    now = time.time()
    # Newest task of a slot first, older ones under it as `\_ web.1`, like docker.
    tasks = sorted(
        tasks, key=lambda t: (t["service_id"], t["slot"], t["node_id"] if not t["slot"] else "", -t["created_at"])
    )
    rows = []
    previous = None
    for task in tasks:
        key = (task["service_id"], task["slot"], task["node_id"] if not task["slot"] else "")
        name = task["name"] if key != previous else f" \\_ {task['name']}"
        previous = key
        error = task["error"] if no_trunc else (task["error"][:60] + ("…" if len(task["error"]) > 60 else ""))
        rows.append(
            [
                task["id"] if no_trunc else short(task["id"]),
                name,
                task.get("image", ""),
                task["node"],
                task["desired_state"].capitalize(),
                _state_text(task, now),
                f'"{error}"' if error else "",
                ", ".join(task["ports"]),
            ]
        )
    table(["ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR", "PORTS"], rows)


def _tasks_with_image(api: Api, ref: str) -> list[dict[str, Any]]:
    service_data = api.get(f"/services/{_path(ref)}")
    tasks = api.get(f"/services/{_path(ref)}/tasks")
    for task in tasks:
        task["image"] = service_data["spec"]["image"]
    return tasks


@service.command("ps")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output.")
@click.option("-q", "--quiet", is_flag=True, help="Only display task IDs.")
@click.option("-w", "--watch", is_flag=True, help="Keep showing the tasks as they change (Ctrl-C to stop).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.argument("refs", nargs=-1, required=True)
def service_ps(no_trunc: bool, quiet: bool, watch: bool, fmt: str, refs: tuple[str, ...]) -> None:
    """List the tasks of one or more services (also: `service tasks`)."""
    api = Api()

    def collect() -> list[dict[str, Any]]:
        return [task for ref in refs for task in _tasks_with_image(api, ref)]

    if fmt == "json":
        print_json(collect())
        return
    if not watch:
        print_tasks(collect(), no_trunc, quiet)
        return
    seen = 0
    try:
        while True:
            console.clear()
            print_tasks(collect(), no_trunc, quiet)
            seen = api.get("/events/wait", params={"seen": seen, "timeout": 5}, timeout=10)["counter"]
    except KeyboardInterrupt:
        pass


service.add_command(service_ps, "tasks")


@service.command("inspect")
@click.option("--pretty", is_flag=True, help="Print the information in a human friendly format.")
@click.argument("refs", nargs=-1, required=True)
def service_inspect(pretty: bool, refs: tuple[str, ...]) -> None:
    """Display detailed information on one or more services."""
    api = Api()
    items = [api.get(f"/services/{_path(ref)}") for ref in refs]
    if not pretty:
        print_json(items)
        return
    for item in items:
        spec = item["spec"]
        lines = [
            f"ID:\t\t{item['id']}",
            f"Name:\t\t{spec['name']}",
            f"Version:\t{item['version']}",
            f"Labels:\t\t{spec['labels']}",
            "Service Mode:\t" + ("Global" if spec["mode"] == "global" else "Replicated"),
        ]
        if spec["mode"] == "replicated":
            lines.append(f" Replicas:\t{spec['replicas']}")
        lines += [
            "Placement:",
            f" Constraints:\t{spec['constraints']}",
            f" Preferences:\t{spec['placement_prefs']}",
            f" Max Replicas Per Node:\t{spec['max_replicas_per_node']}",
            "RestartPolicy:",
            f" Condition:\t{spec['restart_policy']['condition']}",
            f" Delay:\t\t{spec['restart_policy']['delay']:g}s",
            f" Max attempts:\t{spec['restart_policy']['max_attempts']}",
            "ContainerSpec:",
            f" Image:\t\t{spec['image']}",
            f" Args:\t\t{' '.join(spec['command'])}",
            f" Env:\t\t{' '.join(spec['env'])}",
            f"StopGracePeriod:\t{spec['stop_grace_period']:g}s",
            "Endpoint Mode:\tvip (iptables mesh)",
            "Ports:",
        ]
        for port in spec["ports"]:
            lines.append(
                f" PublishedPort = {port['published']}\n  Protocol = {port['protocol']}\n"
                f"  TargetPort = {port['target']}\n  PublishMode = {port['mode']}"
            )
        click.echo("\n".join(lines) + "\n")


@service.command("update")
@_with_options(_create_options)
@click.option("--image", default=None, help="Service image tag.")
@click.option("--env-add", multiple=True, help="Add or update an environment variable.")
@click.option("--env-rm", multiple=True, help="Remove an environment variable.")
@click.option("--label-add", multiple=True, help="Add or update a service label.")
@click.option("--label-rm", multiple=True, help="Remove a label by its key.")
@click.option("--publish-add", multiple=True, help="Add or update a published port.")
@click.option("--publish-rm", multiple=True, help="Remove a published port by its target port (PUBLISHED[:TARGET]).")
@click.option("--constraint-add", multiple=True, help="Add or update a placement constraint.")
@click.option("--constraint-rm", multiple=True, help="Remove a constraint.")
@click.option("--force", is_flag=True, help="Force update even if no changes require it (replaces every task).")
@click.option("--timeout", default="120s", show_default=True, help="How long to wait for convergence without -d.")
@click.argument("ref")
def service_update(
    replicas: str | None,
    env: tuple[str, ...],
    labels: tuple[str, ...],
    publish: tuple[str, ...],
    constraints: tuple[str, ...],
    placement_prefs: tuple[str, ...],
    replicas_max_per_node: str | None,
    restart_condition: str | None,
    restart_delay: str | None,
    restart_max_attempts: str | None,
    restart_window: str | None,
    stop_grace_period: str | None,
    detach: bool,
    quiet: bool,
    image: str | None,
    env_add: tuple[str, ...],
    env_rm: tuple[str, ...],
    label_add: tuple[str, ...],
    label_rm: tuple[str, ...],
    publish_add: tuple[str, ...],
    publish_rm: tuple[str, ...],
    constraint_add: tuple[str, ...],
    constraint_rm: tuple[str, ...],
    force: bool,
    timeout: str,
    ref: str,
) -> None:
    """Update a service."""
    wait = _parsed(parse.duration, timeout)  # before anything is changed
    api = Api()
    current = api.get(f"/services/{_path(ref)}")
    spec = dict(current["spec"])
    if replicas is not None:
        if spec["mode"] == "global":
            fail("replicas can only be used with replicated mode")
        spec["replicas"] = _parsed(parse.replicas, replicas)
    if image:
        spec["image"] = _parsed(parse.image, image)
    env_list = [e for e in spec["env"] if e.split("=", 1)[0] not in set(env_rm)]
    for item in (*env, *env_add):
        _parsed(parse.env, item)
        env_list = [e for e in env_list if e.split("=", 1)[0] != item.split("=", 1)[0]] + [item]
    spec["env"] = env_list
    spec["labels"] = {k: v for k, v in spec["labels"].items() if k not in set(label_rm)}
    spec["labels"].update(dict(_parsed(parse.label, item) for item in (*labels, *label_add)))
    ports = list(spec["ports"])
    for item in publish_rm:
        published = _parsed(lambda text: parse.port_number(text.split(":")[0].split("/")[0], "port"), item)
        kept = [p for p in ports if p["published"] != published]
        if len(kept) == len(ports):
            fail(f"no published port {published} on service {spec['name']}")
        ports = kept
    for item in (*publish, *publish_add):
        new = _port_dict(item)
        ports = [p for p in ports if (p["published"], p["protocol"]) != (new["published"], new["protocol"])] + [new]
    spec["ports"] = ports
    constraint_list = [
        c for c in spec["constraints"] if c not in {str(_parsed(parse.constraint, c)) for c in constraint_rm}
    ]
    for item in (*constraints, *constraint_add):
        text = str(_parsed(parse.constraint, item))
        if text not in constraint_list:
            constraint_list.append(text)
    spec["constraints"] = constraint_list
    if placement_prefs:
        spec["placement_prefs"] = [_parsed(parse.placement_pref, pref) for pref in placement_prefs]
    if replicas_max_per_node is not None:
        spec["max_replicas_per_node"] = _int(replicas_max_per_node, "--replicas-max-per-node")
    restart = dict(spec["restart_policy"])
    if restart_condition:
        restart["condition"] = _parsed(parse.restart_condition, restart_condition).value
    if restart_delay:
        restart["delay"] = _parsed(parse.duration, restart_delay)
    if restart_max_attempts:
        restart["max_attempts"] = _int(restart_max_attempts, "--restart-max-attempts")
    if restart_window:
        restart["window"] = _parsed(parse.duration, restart_window)
    spec["restart_policy"] = restart
    if stop_grace_period:
        spec["stop_grace_period"] = _parsed(parse.duration, stop_grace_period)
    if force:
        spec["force_update"] = int(spec.get("force_update", 0)) + 1
    api.post(f"/services/{_path(ref)}/update", {"version": current["version"], "spec": spec})
    click.echo(spec["name"])
    if not detach:
        _converge(api, current["id"], wait, quiet)


@service.command("scale")
@click.option("-d", "--detach", is_flag=True, help="Exit immediately instead of waiting for convergence.")
@click.argument("pairs", nargs=-1, required=True)
def service_scale(detach: bool, pairs: tuple[str, ...]) -> None:
    """Scale one or multiple replicated services: `service scale web=3 api=2`."""
    wanted = []
    for pair in pairs:
        name, sep, count = pair.partition("=")
        if not sep:
            fail(f"invalid scale specifier {pair!r}: expected SERVICE=REPLICAS")
        wanted.append((name, _parsed(parse.replicas, count)))
    api = Api()
    failed = False
    for name, count in wanted:
        current = api.get(f"/services/{_path(name)}")
        if current["spec"]["mode"] != "replicated":
            click.echo(f"{name}: scale can only be used with replicated mode", err=True)
            failed = True
            continue
        spec = dict(current["spec"], replicas=count)
        api.post(f"/services/{_path(name)}/update", {"version": current["version"], "spec": spec})
        click.echo(f"{name} scaled to {count}")
        if not detach:
            _converge(api, current["id"], 120.0, quiet=False)
    if failed:
        raise SystemExit(1)


@service.command("rm")
@click.argument("refs", nargs=-1, required=True)
def service_rm(refs: tuple[str, ...]) -> None:
    """Remove one or more services."""
    api = Api()
    for ref in refs:
        api.delete(f"/services/{_path(ref)}")
        click.echo(ref)


@service.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Follow log output.")
@click.option("--tail", default="all", help="Number of lines to show from the end of the logs.")
@click.argument("ref")
def service_logs(follow: bool, tail: str, ref: str) -> None:
    """Fetch the logs of a service's tasks."""
    params: dict[str, Any] = {"follow": follow}
    if tail != "all":
        params["tail"] = _int(tail, "--tail")
    Api().stream(f"/services/{_path(ref)}/logs", params)


# --- convergence display ---------------------------------------------------------------------------------


def _converge(api: Api, service_id: str, timeout: float, quiet: bool) -> None:
    """Show progress like docker's until every wanted task runs; exit 1 if it cannot converge."""
    deadline = time.time() + timeout
    seen = 0
    stable_since: float | None = None
    with Live(console=console, transient=False, auto_refresh=False) as live:
        while True:
            service_data = api.get(f"/services/{service_id}")
            tasks = api.get(f"/services/{service_id}/tasks")
            wanted = [t for t in tasks if t["desired_state"] == "running"]
            running, desired = service_data["running"], service_data["desired"]
            lines = [f"overall progress: {running} out of {desired} tasks"]
            for task in sorted(wanted, key=lambda t: (t["slot"], t["node"]))[:20]:
                label = f"{task['slot']}/{desired}" if task["slot"] else task["node"]
                bar = "[" + "=" * 50 + ">]" if task["state"] == "running" else ""
                lines.append(f"{label}: {task['state']:<10} {bar}")
            # An image missing on every node the tasks can go to will never converge: say so and stop.
            rejected_on = {t["node"] for t in tasks if t["state"] == "rejected" and "No such image" in t["error"]}
            converged = running == desired and len(wanted) == desired
            now = time.time()
            stable_since = (stable_since or now) if converged else None
            done = stable_since is not None and now - stable_since >= 0.5
            if done:
                lines.append("verify: Service converged")
            if not quiet:
                live.update(Text("\n".join(lines)), refresh=True)
            if done:
                return
            if rejected_on and running == 0:
                error = next(t["error"] for t in tasks if t["state"] == "rejected")
                fail(
                    f"service {service_data['spec']['name']} cannot converge: task rejected: {error}. "
                    "The service stays and keeps retrying: load the image on the nodes, or `pyswarm service rm` it."
                )
            if now > deadline:
                errors = {t["error"] for t in tasks if t["error"]}
                fail(
                    f"service {service_data['spec']['name']} did not converge within {timeout:g}s"
                    + (f": {'; '.join(sorted(errors))[:400]}" if errors else "")
                )
            seen = api.get("/events/wait", params={"seen": seen, "timeout": 0.5}, timeout=10)["counter"]
