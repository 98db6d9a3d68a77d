"""`coi list`, `info`, `shutdown`, `kill`, `clean`, `persist`: managing coi containers."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from coi.commands.common import connect, load_config, workspace_of
from coi.core import labels, output
from coi.core.errors import CoiError, NotFound, UsageError

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.incus.api import IncusAPI


def is_coi(inst: dict[str, Any]) -> bool:
    """A container coi made (it carries coi's labels)."""
    return any(k.startswith(labels.PREFIX) for k in (inst.get("config") or {}))


def describe(inst: dict[str, Any]) -> dict[str, Any]:
    """One container as `coi list --format json` shows it (lowercase keys)."""
    config = inst.get("config") or {}
    state = inst.get("state") or {}
    eth0 = ((state.get("network") or {}).get("eth0") or {}).get("addresses", [])
    ipv4 = next((a["address"] for a in eth0 if a.get("family") == "inet"), None)
    slot = config.get(labels.SLOT, "")
    return {
        "name": inst["name"],
        "persistent": config.get(labels.PERSISTENT) == "true",
        "status": inst.get("status", "").lower(),
        "workspace": config.get(labels.WORKSPACE),
        "slot": int(slot) if slot.isdigit() else None,
        "tool": config.get(labels.TOOL),
        "image": config.get(labels.IMAGE),
        "ipv4": ipv4,
        "created": inst.get("created_at"),
        "network_mode": config.get(labels.NETWORK_MODE),
        "session": config.get(labels.SESSION),
        "branch": config.get(labels.WORKTREE_BRANCH),
        "pooled": bool(config.get(labels.POOL)),  # in the warm pool, no session yet
        "limits": {k[len("limits.") :]: v for k, v in config.items() if k.startswith("limits.")},
    }


def coi_containers(
    incus: IncusAPI, listing: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Every coi container of the project (from the given recursion=2 listing, or a fresh
    one), with state, as `describe` shows it."""
    if listing is None:
        listing = incus.instances(state=True)
    return sorted((describe(i) for i in listing if is_coi(i)), key=lambda d: d["name"])


def reapable(inst: dict[str, Any]) -> bool:
    """A stopped ephemeral session container, which `reap` saves and removes unless a coi
    process still watches it (the cheap half of reap's test: no import, no lock)."""
    config = inst.get("config") or {}
    return (
        inst.get("status") == "Stopped"
        and labels.SESSION in config
        and config.get(labels.PERSISTENT) != "true"
    )


def list_(args: argparse.Namespace) -> int:
    """List coi containers (and, with --all, saved sessions)."""
    from coi.sessions import journal

    cfg = load_config(args)
    incus = connect(args, cfg)
    if journal.pending(incus.project):  # `coi run`s still finishing: show where they end
        journal.settle(incus, wait=True)
    listing = incus.instances(state=True)
    if any(reapable(i) for i in listing):
        from coi.sessions import lifecycle

        gone = set(lifecycle.reap(incus, cfg, instances=listing))
        listing = [i for i in listing if i["name"] not in gone]
    from coi.network import healing

    healing.heal_when_needed(incus)  # rules back for restricted containers that lost them
    _release_orphaned_views(incus, listing)
    containers = coi_containers(incus, listing)
    _brokers(containers)
    time_left(containers)
    saved = _saved() if args.all else []
    if args.format == "json":
        from coi.network import enforce

        counts = enforce.counts(incus)  # egress log counters: new connections per verdict
        for c in containers:
            c["connections"] = counts.get(f"coi:{incus.project}/{c['name']}")
        output.emit_json({"containers": containers, **({"sessions": saved} if args.all else {})})
        return 0
    mode = {True: "persistent", False: "ephemeral"}
    output.table(
        ["name", "mode", "status", "slot", "tool", "ipv4", "left", "workspace", "branch"],
        [
            [
                c["name"],
                "pooled" if c["pooled"] else mode[c["persistent"]],
                c["status"],
                c["slot"] or "",
                c["tool"] or "",
                c["ipv4"] or "",
                shown_left(c),
                c["workspace"] or "",
                c["branch"] or "",
            ]
            for c in containers
        ],
    )
    kept = [c for c in containers if c["persistent"] and c["status"] == "stopped"]
    _say_stopped([c for c in kept if c["slot"] and c["workspace"]])
    if args.all:
        output.data("")
        output.table(
            ["session", "tool", "saved", "workspace"],
            [[s["session_id"], s["tool"], s["saved_at"][:19], s["workspace"]] for s in saved],
        )
    return 0


def _say_stopped(kept: list[dict[str, Any]]) -> None:
    """One line on how stopped persistent containers start again (`incus start` cannot)."""
    from coi.core import slots

    if len(kept) == 1:
        hint = slots.restart_hint(kept[0]["slot"], kept[0]["workspace"])
        output.info(f"{kept[0]['name']} is stopped: {hint}")
    elif kept:
        hint = slots.restart_hint("SLOT", "WORKSPACE")
        output.info(f"{len(kept)} persistent containers are stopped: with their columns, {hint}")


def _release_orphaned_views(incus: IncusAPI, listing: list[dict[str, Any]]) -> None:
    """Locked views whose container went without coi's teardown are released (the launch
    path is imported only when a view on this host is not one of this listing's)."""
    from coi.boundary import protect

    try:
        views = {v.removesuffix(".git") for v in os.listdir(protect.VIEW_ROOT)}
    except OSError:
        return
    if views <= {i["name"] for i in listing}:
        return
    from coi.launch import executor

    for name in executor.release_orphaned_views(incus):
        output.info(f"released the locked workspace view of {name}, whose container is gone")


def _brokers(containers: list[dict[str, Any]]) -> None:
    """Each container's credential broker (port, upstreams, requests served); a dead one
    is said on stderr."""
    if not containers:
        return
    from coi.broker import session

    for c in containers:
        c["broker"] = session.describe(c["name"])
        if c["broker"] and not c["broker"]["alive"]:
            output.warn(session.dead_line(c["name"]))


def time_left(containers: list[dict[str, Any]], *, warn: bool = True) -> None:
    """Each running container's time left before a [limits] max_duration or idle_stop ends
    its session: time_left (seconds), time_left_by (which limit) and limiter (alive, dead,
    or None: no limits). A dead limiter enforces nothing, so no time is promised (None);
    with warn, that is said on stderr."""
    from coi.sessions import limiters

    for c in containers:
        state = limiters.status(c["name"]) if c["status"] == "running" else None
        alive = bool(state and state["alive"])
        left = state["left"] if state and alive else None
        c["time_left"] = None if left is None else int(left[0])
        c["time_left_by"] = None if left is None else left[1]
        c["limiter"] = None if state is None else "alive" if alive else "dead"
        if warn and state and not alive:
            output.warn(
                f"the limiter of {c['name']} has stopped: its limits are not enforced "
                f"until `coi attach {c['name']}` starts it again"
            )


def shown_left(container: Mapping[str, Any]) -> str:
    """The time-left column: "1h05m", "4m10s idle" (the idle clock), "no limiter" (it
    died), or nothing (no limits)."""
    from coi.core import durations

    if container.get("limiter") == "dead":
        return "no limiter"
    if container.get("time_left") is None:
        return ""
    idle = " idle" if container["time_left_by"] == "idle_stop" else ""
    return durations.show(container["time_left"]) + idle


def info(args: argparse.Namespace) -> int:
    """Show one saved session (default: the newest of this workspace)."""
    from coi.sessions import store

    workspace = workspace_of(args)
    found = [
        (m, p)
        for m, p in store.all_sessions()
        if (m.session_id == args.id if args.id else m.workspace == str(workspace))
    ]
    if not found:
        raise UsageError("no such saved session: see `coi list --all`")
    meta, folder = found[0]
    files = sum(1 for p in folder.rglob("*") if p.is_file())
    output.emit_json({**vars(meta), "path": str(folder), "files": files})
    return 0


def _saved() -> list[dict[str, Any]]:
    from coi.sessions import store

    return [dict(vars(m), path=str(p)) for m, p in store.all_sessions()]


def confirm(question: str, force: bool) -> None:
    """Ask before acting on all containers; with no terminal, require --force."""
    if force:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{question} needs confirmation: there is no terminal, pass --force")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise CoiError("cancelled")


def _targets(incus: IncusAPI, args: argparse.Namespace, verb: str) -> list[dict[str, Any]]:
    containers = {c["name"]: c for c in coi_containers(incus)}
    if args.all:
        confirm(f"{verb} all {len(containers)} coi containers?", args.force)
        return list(containers.values())
    if not args.names:
        raise UsageError(f"name the containers to {verb}, or pass --all")
    missing = [n for n in args.names if n not in containers]
    if missing:
        raise NotFound(f"no coi container {', '.join(missing)}: see `coi list`")
    return [containers[n] for n in args.names]


def save_running(incus: IncusAPI, cfg: Config, container: dict[str, Any]) -> None:
    """Save the session of a running coi container (before it stops)."""
    from coi.config import tools
    from coi.sessions import store

    if not container.get("session") or not container.get("tool"):
        return
    tool = tools.resolve(cfg, container["tool"])
    meta = store.Metadata(
        session_id=container["session"],
        container_name=container["name"],
        slot=container["slot"],
        workspace=container["workspace"] or "",
        tool=tool.name,
        persistent=container["persistent"],
        profile=None,
        saved_at=store.now(),
    )
    running, limit = container["status"] == "running", cfg.sessions.max_state_bytes
    saved = store.save(incus, container["name"], meta, tool.state_dir, running=running, limit=limit)
    if saved:
        output.info(f"session {meta.session_id} saved to {saved}")


def shutdown(args: argparse.Namespace) -> int:
    """Stop gracefully (then force after --timeout), saving sessions; delete unless persistent."""
    from coi.launch import executor

    cfg = load_config(args)
    incus = connect(args, cfg)
    for container in _targets(incus, args, "shut down"):
        name = container["name"]
        if container["status"] == "running":
            save_running(incus, cfg, container)
            try:
                incus.set_state(name, "stop", timeout=args.timeout)
            except CoiError:
                incus.set_state(name, "stop", force=True)
        if not container["persistent"]:
            executor.teardown(incus, name)
        elif incus.state(name).get("status") == "Stopped":  # as a session's end does
            executor.sweep(executor.host_folders(incus, name))
            executor.release_workspace(name)  # its placeholders leave the workspace meanwhile
        output.info(f"{name}: stopped" + ("" if container["persistent"] else " and deleted"))
    return 0


def kill(args: argparse.Namespace) -> int:
    """Force-stop and delete at once."""
    from coi.launch import executor

    incus = connect(args)
    for container in _targets(incus, args, "kill"):
        executor.teardown(incus, container["name"])
        output.info(f"{container['name']}: killed")
    return 0


def clean(args: argparse.Namespace) -> int:
    """Remove stopped coi containers (sessions saved first); --sessions also saved sessions."""
    from coi.launch import executor
    from coi.sessions import store

    cfg = load_config(args)
    incus = connect(args, cfg)
    from coi.sessions import journal, lifecycle

    journal.settle(incus, wait=True)
    lifecycle.reap(incus, cfg)
    stopped = [c for c in coi_containers(incus) if c["status"] == "stopped"]
    if stopped:
        confirm(f"delete {len(stopped)} stopped coi containers?", args.force)
    for container in stopped:
        executor.teardown(incus, container["name"])
        output.info(f"{container['name']}: deleted")
    for name in executor.release_orphaned_views(incus):
        output.info(f"released the locked workspace view of {name}, whose container is gone")
    if args.orphans:
        from coi.network import enforce

        for rule in enforce.remove_orphans(incus):
            output.info(f"removed network rules of {rule}, whose container is gone")
    if args.sessions:
        saved = store.all_sessions()
        if saved:
            confirm(f"delete {len(saved)} saved sessions?", args.force)
        for _meta, folder in saved:
            shutil.rmtree(folder)
        output.info(f"{len(saved)} saved sessions deleted")
    return 0


def persist(args: argparse.Namespace) -> int:
    """Mark containers persistent: kept (not deleted) when their session ends."""
    from coi.launch import executor

    incus = connect(args)
    for container in _targets(incus, args, "persist"):
        with executor.changing(incus, container["name"]) as record:
            config = record.get("config") or {}
            config[labels.PERSISTENT] = "true"
            incus.update_instance(container["name"], {"config": config})
        output.info(f"{container['name']}: persistent")
    return 0
