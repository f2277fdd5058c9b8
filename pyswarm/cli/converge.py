"""Waiting for a service to converge, with docker's progress display (`service create`, `update`, `scale`)."""

from __future__ import annotations

import time

from rich.live import Live
from rich.text import Text

from pyswarm.cli.client import Api, fail
from pyswarm.cli.render import console
from pyswarm.cli.text import printable


def converge(api: Api, service_id: str, timeout: float, quiet: bool) -> None:
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
            mode, completed = service_data["spec"]["mode"], service_data.get("completed", 0)
            if mode in ("replicated-job", "global-job"):
                # docker: "job progress: 2 out of 3 complete", then "job complete"
                total = service_data["spec"]["replicas"] if mode == "replicated-job" else desired + completed
                lines = [
                    f"job progress: {completed} out of {total} complete",
                    f"active tasks: {running} out of {desired} tasks",
                ]
                converged = completed >= total and running == 0
            else:
                lines = [f"overall progress: {running} out of {desired} tasks"]
                converged = running == desired and len(wanted) == desired
            for task in sorted(wanted, key=lambda t: (t["slot"], t["node"]))[:20]:
                label = f"{task['slot']}/{desired}" if task["slot"] else printable(task["node"], one_line=True)
                bar = "[" + "=" * 50 + ">]" if task["state"] == "running" else ""
                if task["state"] == "preparing" and task["message"] != "preparing":  # pulling or receiving its image
                    bar = printable(task["message"], one_line=True)[:80]
                lines.append(f"{label}: {task['state']:<10} {bar}")
            # An image missing on every node the tasks can go to will never converge: say so and stop.
            rejected_on = {t["node"] for t in tasks if t["state"] == "rejected" and "No such image" in t["error"]}
            now = time.time()
            stable_since = (stable_since or now) if converged else None
            done = stable_since is not None and now - stable_since >= 0.5
            if done:
                lines.append(
                    "job complete" if mode in ("replicated-job", "global-job") else "verify: Service converged"
                )
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
