"""Maintainer tasks (invoke). Thin wrappers: every task calls into `coi`."""

from __future__ import annotations

from typing import Any

from invoke import Collection, Context, Exit, task


def _coi(*argv: str, passthrough: bool = False) -> None:
    """Run one coi command in-process; a failure ends invoke with coi's exit code
    (silently for `passthrough`, where the code is the inner command's own)."""
    from coi.commands.cli import main

    code = main(list(argv))
    if code != 0:
        message = None if passthrough else f"coi {' '.join(argv)} failed with exit code {code}"
        raise Exit(message, code=code)


@task(help={"dry_run": "print the plan, change nothing"})
def setup(c: Context, dry_run: bool = False) -> None:
    """Install and start Incus and create coi's pool, bridge and profiles."""
    _coi("setup", *(["--dry-run"] if dry_run else []))


@task(help={"format": "text or json"})
def doctor(c: Context, format: str = "text") -> None:
    """Check the host; exit 0 healthy, 1 degraded, 2 unusable."""
    _coi("doctor", "--format", format)


def _profile_target() -> tuple[Any, dict[str, str]]:
    import argparse

    from coi.commands.common import connect, load_config

    cfg = load_config(argparse.Namespace())
    return connect(cfg), {"pool": cfg.incus.storage_pool, "network": cfg.incus.network}


@task(name="diff", help={"check": "exit 1 when any live profile differs from its file"})
def profiles_diff(c: Context, check: bool = False) -> None:
    """Show drift between profiles/*.yaml and the live Incus profiles, key by key."""
    from coi.launch.profiles import survey

    found = survey(*_profile_target())
    for item in found:
        print(f"{item.name}: " + ("in sync" if item.in_sync else item.describe()))
    drifted = [item.name for item in found if not item.in_sync]
    if check and drifted:
        raise Exit(f"profiles differ from their files: {', '.join(drifted)}", code=1)


@task(name="apply")
def profiles_apply(c: Context) -> None:
    """Create missing and upgrade older live profiles; a newer live one is left alone."""
    from coi.core.output import warn
    from coi.launch.profiles import apply

    for name, action in apply(*_profile_target(), log=warn).items():
        print(f"{name}: {action.value}")


profiles = Collection("profiles", profiles_diff, profiles_apply)


def _flag(name: str, on: bool) -> list[str]:
    return [name] if on else []


@task(
    help={
        "force": "rebuild even when the inputs are unchanged",
        "alias": "image alias (default: coi)",
        "format": "text or json",
    }
)
def build(c: Context, force: bool = False, alias: str = "", format: str = "text") -> None:
    """Build the coi image at the pinned versions; a quick no-op when up to date."""
    _coi(
        "build",
        *_flag("--force", force),
        *(["--alias", alias] if alias else []),
        "--format",
        format,
    )


@task(name="base", help={"release": "debian/12 or debian/13", "force": "rebuild it"})
def images_base(c: Context, release: str = "debian/12", force: bool = False) -> None:
    """Build (or find up to date) coi's local Debian base image."""
    import argparse

    from coi.commands.common import connect, load_config
    from coi.images.base import ensure_base

    print(ensure_base(connect(load_config(argparse.Namespace())), release, force=force))


@task(
    name="custom",
    help={
        "name": "the image's alias",
        "script": "build script, run as root",
        "base": "image to build on (default: coi)",
        "force": "rebuild even when up to date",
        "format": "text or json",
    },
)
def images_custom(
    c: Context, name: str, script: str, base: str = "coi", force: bool = False, format: str = "text"
) -> None:
    """Build a custom image from a script on top of coi (or --base)."""
    argv = ["build", "custom", name, "--script", script, "--base", base, "--format", format]
    _coi(*argv, *_flag("--force", force))


@task(
    name="publish",
    help={
        "container": "a stopped container",
        "alias": "image alias",
        "description": "image description",
        "force": "stop a running container first",
    },
)
def images_publish(
    c: Context, container: str, alias: str, description: str = "", force: bool = False
) -> None:
    """Publish a container as an image (with a dated alias too)."""
    argv = ["image", "publish", container, alias, "--description", description]
    _coi(*argv, *_flag("--force", force))


@task(
    name="cleanup",
    help={"prefix": "e.g. coi-", "keep": "newest builds kept (1+)", "dry_run": "delete nothing"},
)
def images_cleanup(c: Context, prefix: str, keep: int, dry_run: bool = False) -> None:
    """Delete all but the newest PREFIX-YYYYMMDD-HHMMSS builds."""
    _coi("image", "cleanup", prefix, "--keep", str(keep), *_flag("--dry-run", dry_run))


@task(name="export", help={"name": "image alias (default: coi)", "dir": "output folder"})
def images_export(c: Context, name: str = "coi", dir: str = "dist") -> None:
    """Write image tarball, manifest.json and SHA256SUMS into a folder."""
    _coi("image", "export", name, dir)


# -- sessions: thin wrappers over the same `coi` commands, with the same flags ----------

SESSION_HELP = {
    "workspace": "workspace to mount (default: the current folder)",
    "slot": "slot for parallel sessions (0: automatic)",
    "persistent": "keep the container between sessions",
    "resume": "resume a session: the newest of this workspace, or the id given",
    "profile": "use the named config profile",
    "image": "image to launch (default: coi)",
    "env": "KEY=VALUE set inside (repeatable)",
    "storage": "a persistent storage folder, mounted at /storage",
    "network": "restricted, allowlist or open",
    "tool": "the AI tool to run (default: claude)",
    "worktree": "the slot's own git worktree: on branch coi/<slot>, or the branch given",
}


def _flags(**options: Any) -> list[str]:
    """CLI flags of the options a task was given: True -> --flag, a value -> --flag VALUE."""
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        values = value if isinstance(value, list) else [value]
        for item in values:
            if item is True:
                argv.append(flag)
            elif item not in (None, False, "", 0):
                argv.append(f"{flag}={item}")
    return argv


def _command(c: Context) -> list[str]:
    """The command given after `--`, word for word.

    invoke joins its remainder with spaces, losing the quoting (`sh -c 'exit 3'` would
    become `sh -c exit 3`), so the words come from the process's own argv when it has them.
    """
    import shlex
    import sys

    if "--" in sys.argv:
        return sys.argv[sys.argv.index("--") + 1 :]
    return shlex.split(c.remainder)


SESSION_OPTIONS: dict[str, Any] = dict(iterable=["env"], optional=["resume", "worktree"])


@task(**SESSION_OPTIONS, help={**SESSION_HELP, "background": "start it, do not attach"})
def shell(
    c: Context,
    workspace: str = "",
    slot: int = 0,
    persistent: bool = False,
    resume: Any = None,
    profile: str = "",
    image: str = "",
    env: Any = None,
    storage: str = "",
    network: str = "",
    tool: str = "",
    worktree: Any = None,
    background: bool = False,
) -> None:
    """Start or resume an AI coding session in a container and attach to it."""
    options = dict(locals())
    options.pop("c")
    _coi("shell", *_session_argv(options))


@task(**SESSION_OPTIONS, help=SESSION_HELP)
def run(
    c: Context,
    workspace: str = "",
    slot: int = 0,
    persistent: bool = False,
    resume: Any = None,
    profile: str = "",
    image: str = "",
    env: Any = None,
    storage: str = "",
    network: str = "",
    tool: str = "",
    worktree: Any = None,
) -> None:
    """Run the command after `--` in a fresh session container: `invoke run -- npm test`."""
    options = dict(locals())
    options.pop("c")
    _coi("run", *_session_argv(options), "--", *_command(c), passthrough=True)


def _session_argv(options: dict[str, Any]) -> list[str]:
    """--resume and --worktree may come without a value (invoke then gives True): the
    newest session, the slot's own branch."""
    optional = {key: options.pop(key, None) for key in ("resume", "worktree")}
    argv = _flags(**options)
    for key, value in optional.items():
        if value is True:
            argv.append(f"--{key}")
        elif value:
            argv.append(f"--{key}={value}")
    return argv


@task(help={"name": "container (default: this workspace's)", "slot": "slot", "bash": "plain bash"})
def attach(c: Context, name: str = "", slot: int = 0, bash: bool = False) -> None:
    """Attach to a running session."""
    _coi("attach", *_flags(slot=slot, bash=bash), *([name] if name else []))


@task(name="list", help={"all": "also list saved sessions", "format": "text or json"})
def list_(c: Context, all: bool = False, format: str = "text") -> None:
    """List coi containers (and saved sessions with --all)."""
    _coi("list", *_flags(all=all, format=format))


TARGETS_HELP = {
    "name": "a container (repeatable)",
    "all": "every coi container",
    "force": "do not ask",
}


@task(iterable=["name"], help={**TARGETS_HELP, "timeout": "seconds before forcing (60)"})
def shutdown(
    c: Context, name: Any = None, all: bool = False, force: bool = False, timeout: int = 60
) -> None:
    """Stop containers cleanly, saving their sessions."""
    _coi("shutdown", *_flags(all=all, force=force, timeout=timeout), *(name or []))


@task(iterable=["name"], help=TARGETS_HELP)
def kill(c: Context, name: Any = None, all: bool = False, force: bool = False) -> None:
    """Force-stop and delete containers."""
    _coi("kill", *_flags(all=all, force=force), *(name or []))


@task(
    help={
        "force": "do not ask",
        "sessions": "also delete saved sessions",
        "orphans": "remove network rules left behind",
    }
)
def clean(c: Context, force: bool = False, sessions: bool = False, orphans: bool = False) -> None:
    """Remove stopped containers (and saved sessions, orphaned rules)."""
    _coi("clean", *_flags(force=force, sessions=sessions, orphans=orphans))


images = Collection(
    "images", images_base, images_custom, images_publish, images_cleanup, images_export
)
ns = Collection(
    setup, doctor, build, profiles, images, shell, run, attach, list_, shutdown, kill, clean
)
