"""`coi container ...`: low-level instance commands, thin over the adapter and launch path."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import BinaryIO

from coi.commands.common import connect, load_config
from coi.core import labels, output
from coi.core.errors import IncusError, NotFound, UsageError


def launch(args: argparse.Namespace) -> int:
    """Create and start NAME from IMAGE through the one launch path."""
    from coi.launch import executor
    from coi.launch.spec import BOOT_BARRIER_SH, LaunchSpec

    cfg = load_config(args)
    incus = connect(args, cfg)
    executor.prepare(incus, cfg.incus.storage_pool, cfg.incus.network)
    spec = LaunchSpec(
        name=args.name,
        image=args.image,
        ephemeral=args.ephemeral,
        network_mode=cfg.network.mode,
        container_uid=cfg.incus.claude_uid,
    )
    executor.create(incus, spec)
    if not args.no_wait:  # ready: past early boot, which empties /tmp
        incus.execute(args.name, ["sh", "-c", BOOT_BARRIER_SH], idempotent=True)
    output.info(f"launched {args.name} from {args.image}")
    return 0


def start(args: argparse.Namespace) -> int:
    """Start a stopped instance (a session's persistent container: say how it starts)."""
    incus = connect(args)
    try:
        incus.set_state(args.name, "start")
    except IncusError as exc:
        config = incus.instance(args.name).get("config") or {}
        ours = labels.SLOT in config and labels.WORKSPACE in config
        if not ours or "recursive option" not in str(exc):  # the view only coi builds
            raise
        from coi.core.slots import restart_hint

        hint = restart_hint(config[labels.SLOT], config[labels.WORKSPACE])
        raise UsageError(f"{args.name} is a session's container: {hint}") from exc
    return 0


def stop(args: argparse.Namespace) -> int:
    """Stop an instance (cleanly, or at once with --force)."""
    connect(args).set_state(args.name, "stop", force=args.force, timeout=-1 if args.force else 60)
    return 0


def delete(args: argparse.Namespace) -> int:
    """Delete an instance (a running one only with --force)."""
    incus = connect(args)
    if not args.force and incus.state(args.name).get("status") == "Running":
        raise UsageError(f"{args.name} is running: stop it first or pass --force")
    from coi.launch import executor

    executor.teardown(incus, args.name, force=args.force)  # also removes its network rules
    return 0


def exists(args: argparse.Namespace) -> int:
    """Exit 0 when the instance exists, 1 when not."""
    return 0 if connect(args).has_instance(args.name) else 1


def running(args: argparse.Namespace) -> int:
    """Exit 0 when the instance is running, 1 otherwise."""
    try:
        status = connect(args).state(args.name).get("status")
    except NotFound:
        return 1
    return 0 if status == "Running" else 1


def _env_pairs(items: list[str] | None) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items or [])


def _writer(stream: BinaryIO) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        stream.write(data)
        stream.flush()

    return write


def exec_(args: argparse.Namespace) -> int:
    """Run a command inside; its exit code becomes coi's."""
    command = list(args.cmd)
    if not command:
        raise UsageError("no command given: coi container exec NAME -- CMD ...")
    incus = connect(args)
    live = not args.capture
    result = incus.execute(
        args.name,
        command,
        user=args.user,
        group=args.group,
        env=_env_pairs(args.exec_env),
        cwd=args.cwd,
        raw_stdout=_writer(sys.stdout.buffer) if live else None,
        raw_stderr=_writer(sys.stderr.buffer) if live else None,
    )
    if args.capture:
        if args.format == "raw":
            sys.stdout.write(result.stdout)
        else:
            print(
                json.dumps(
                    {
                        "stdout": result.stdout,
                        "stderr": result.stderr,
                        "exit_code": result.exit_code,
                    }
                )
            )
    return result.exit_code


def mount(args: argparse.Namespace) -> int:
    """Add a disk device mounting a host folder inside the instance."""
    from pathlib import Path

    source = Path(args.source).expanduser().resolve()
    if not source.exists():
        raise UsageError(f"{args.source} does not exist: pass an existing host path")
    from coi.launch import executor

    incus = connect(args)
    device = {"type": "disk", "source": str(source), "path": args.path}
    if args.shift:
        device["shift"] = "true"
    with executor.changing(incus, args.name) as record:
        devices = dict(record.get("devices") or {})
        devices[args.device] = device
        incus.update_instance(args.name, {"devices": devices})
    output.info(f"mounted {source} at {args.path} in {args.name}")
    return 0
