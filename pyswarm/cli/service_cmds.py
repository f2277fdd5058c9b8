"""`service`: create, ls, ps/tasks, inspect, update, scale, rm, logs."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any

import click

from pyswarm.cli.client import Api, fail, print_json, ref_path
from pyswarm.cli.container_flags import (
    CREATE_OPTIONS,
    SHARED_OPTIONS,
    UPDATE_OPTIONS,
    ContainerFlags,
    updated_container_settings,
)
from pyswarm.cli.converge import converge
from pyswarm.cli.registry_auth import registry_auth_header
from pyswarm.cli.render import console, print_tasks, short, table
from pyswarm.cli.service_pretty import pretty_service
from pyswarm.cli.spec_update import UpdateFlags, since_time, updated_spec, whole_number
from pyswarm.cli.text import printable
from pyswarm.model import ServiceMode, ServiceSpec, parse, parse_container
from pyswarm.model.codec import spec_to_dict


def _path(ref: str) -> str:
    return ref_path(ref, "service reference")


def _parsed(func: Any, values: Any) -> Any:
    try:
        return func(values)
    except parse.SpecError as exc:
        fail(str(exc))


def _ports_text(spec: dict[str, Any]) -> str:
    return ", ".join(
        f"*:{p['published']}->{p['target']}/{p['protocol']}" + (" (host)" if p["mode"] == "host" else "")
        for p in spec["ports"]
    )


def _replicas_text(service: dict[str, Any]) -> str:
    mode = service["spec"]["mode"]
    if mode in ("replicated-job", "global-job"):
        # docker's: running/desired (completed/total completed); a global job's total is desired + completed.
        completed = service.get("completed", 0)
        total = service["spec"]["replicas"] if mode == "replicated-job" else service["desired"] + completed
        return f"{service['running']}/{service['desired']} ({completed}/{total} completed)"
    if mode == "global":
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


def _warn(answer: dict[str, Any]) -> None:
    for warning in answer.get("warnings") or ():
        click.echo(printable(warning), err=True)


def _image_options(func: Any) -> Any:
    func = click.option(
        "--with-registry-auth", is_flag=True, help="Send registry authentication details to swarm agents."
    )(func)
    return click.option(
        "--no-resolve-image", is_flag=True, help="Do not query the registry to resolve the image's digest."
    )(func)


def _image_params(image: str, no_resolve_image: bool, with_registry_auth: bool) -> dict[str, Any]:
    """The request's query and headers for --no-resolve-image and --with-registry-auth."""
    headers = {}
    if with_registry_auth:
        header = registry_auth_header(image, os.environ)
        if header is not None:
            headers["X-Registry-Auth"] = header
    return {"params": {"resolve_image": not no_resolve_image}, "headers": headers}


def _env_file_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read(1 << 20)
    except (OSError, UnicodeDecodeError) as exc:
        raise parse.SpecError(f"cannot read env file {path}: {exc}") from None
    return parse_container.env_file(text, os.environ)


def _with_options(options: list[Any]) -> Any:
    def decorate(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _int(text: str, what: str) -> int:
    try:
        return whole_number(text, what)
    except parse.SpecError as exc:
        fail(str(exc))


@service.command("create", context_settings={"allow_interspersed_args": False})  # docker: flags before IMAGE
@click.option("--name", default=None, help="Service name.")
@click.option(
    "--mode",
    type=click.Choice(["replicated", "global", "replicated-job", "global-job"]),
    default="replicated",
    show_default=True,
)
@_with_options(_create_options + SHARED_OPTIONS + CREATE_OPTIONS)
@_image_options
@click.option("--timeout", default="120s", show_default=True, help="How long to wait for convergence without -d.")
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def service_create(
    name: str | None,
    mode: str,
    detach: bool,
    quiet: bool,
    timeout: str,
    image: str,
    command: tuple[str, ...],
    env_file: tuple[str, ...],
    no_resolve_image: bool,
    with_registry_auth: bool,
    **flags: Any,
) -> None:
    """Create a new service."""
    if name is None:
        import secrets

        name = "svc-" + secrets.token_hex(4)
    if ServiceMode(mode).is_global and flags["replicas"] is not None:
        fail("replicas can only be used with replicated or replicated-job mode")
    try:
        # create is update's merge applied to a new spec's defaults: a flag means the same in both.
        base = ServiceSpec(name=parse.service_name(name), image=parse.image(image), mode=ServiceMode(mode))
        spec = spec_to_dict(replace(base, command=command))
        parse.check_port_conflicts(parse.publish(item) for item in flags["publish"])
        container = ContainerFlags.take(flags)
        if mode == "replicated-job" and flags["replicas"] is None and container.max_concurrent is not None:
            flags["replicas"] = container.max_concurrent  # docker: completions default to --max-concurrent
        lines = tuple(line for path in env_file for line in _env_file_lines(path))
        spec = updated_container_settings(
            updated_spec(spec, UpdateFlags(**flags)), replace(container, env_file_lines=lines)
        )
        request = _image_params(spec["image"], no_resolve_image, with_registry_auth)
    except parse.SpecError as exc:
        fail(str(exc))
    wait = _parsed(parse.duration, timeout)  # before anything is created
    api = Api()
    created = api.post("/services", spec, **request)
    _warn(created)
    click.echo(created["id"])
    if not detach:
        converge(api, created["id"], wait, quiet)


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
                s["spec"]["mode"].replace("-", " "),  # docker: "replicated job"
                _replicas_text(s),
                s["spec"]["image"],
                _ports_text(s["spec"]),
            ]
            for s in services
        ],
    )


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
        click.echo(pretty_service(item))


@service.command("update")
@_with_options(_create_options + SHARED_OPTIONS + UPDATE_OPTIONS)
@_image_options
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
    detach: bool, quiet: bool, timeout: str, ref: str, no_resolve_image: bool, with_registry_auth: bool, **flags: Any
) -> None:
    """Update a service."""
    wait = _parsed(parse.duration, timeout)  # before anything is changed
    api = Api()
    current = api.get(f"/services/{_path(ref)}")
    try:
        container = ContainerFlags.take(flags)
        spec = updated_container_settings(updated_spec(current["spec"], UpdateFlags(**flags)), container)
        request = _image_params(spec["image"], no_resolve_image, with_registry_auth)
    except parse.SpecError as exc:
        fail(str(exc))
    updated = api.post(
        f"/services/{_path(ref)}/update",
        {"version": current["version"], "spec": spec},
        **request,
    )
    _warn(updated)
    click.echo(spec["name"])
    if not detach:
        converge(api, current["id"], wait, quiet)


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
        if current["spec"]["mode"] not in ("replicated", "replicated-job"):
            click.echo(f"{name}: scale can only be used with replicated or replicated-job mode", err=True)
            failed = True
            continue
        spec = dict(current["spec"], replicas=count)
        api.post(f"/services/{_path(name)}/update", {"version": current["version"], "spec": spec})
        click.echo(f"{name} scaled to {count}")
        if not detach:
            converge(api, current["id"], 120.0, quiet=False)
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
@click.option("-n", "--tail", default="all", help="Number of lines to show from the end of the logs.")
@click.option("--since", default=None, help="Show logs since timestamp (2013-01-02T13:23:37Z) or relative (42m).")
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps.")
@click.option("--no-task-ids", is_flag=True, help="Do not include task IDs in output.")
@click.argument("ref")
def service_logs(follow: bool, tail: str, since: str | None, timestamps: bool, no_task_ids: bool, ref: str) -> None:
    """Fetch the logs of a service's tasks, those that ended included (until they leave the task history)."""
    params: dict[str, Any] = {"follow": follow, "timestamps": timestamps, "task_ids": not no_task_ids}
    if tail != "all":
        params["tail"] = _int(tail, "--tail")
    if since is not None:
        params["since"] = _parsed(lambda text: since_time(text, time.time()), since)
    Api().stream(f"/services/{_path(ref)}/logs", params)
