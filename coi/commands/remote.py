"""`coi remote add|list|remove|switch`: named Incus servers and clusters (coi/remote/).

This module is both the command table (cheap to import) and the commands.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from coi.commands.cli import Command
from coi.core import output

R = "coi.commands.remote:"


def add(args: argparse.Namespace) -> int:
    """Pin the server's certificate, get this client trusted, store the remote."""
    from coi.remote import trust

    added = trust.add(
        args.name,
        args.url,
        token=args.token,
        cert_file=Path(args.server_cert) if args.server_cert else None,
        accept=args.accept_certificate,
        project=args.project,
    )
    where = f" (member {added.server})" if added.server else ""
    output.info(
        f"remote {added.remote.name} = {added.remote.url}{where}, trusted by {added.how}, "
        f"certificate {added.fingerprint[:16]}... pinned"
    )
    return 0


def list_(args: argparse.Namespace) -> int:
    from coi.config import remotes

    chosen = remotes.current()
    rows: list[list[object]] = [
        [remotes.LOCAL, "unix socket", "", "*" if chosen == "local" else ""]
    ]
    for remote in remotes.remotes():
        mark = "*" if remote.name == chosen else ""
        rows.append([remote.name, remote.url, remote.project, mark])
    if args.format == "json":
        output.emit_json(
            [{"name": r[0], "url": r[1], "project": r[2], "current": r[3] == "*"} for r in rows]
        )
    else:
        output.table(["NAME", "URL", "PROJECT", "CURRENT"], rows)
    return 0


def remove(args: argparse.Namespace) -> int:
    from coi.config import remotes

    remotes.remove(remotes.check_name(args.name))
    output.info(f"remote {args.name} removed (the server still trusts this client's certificate)")
    return 0


def switch(args: argparse.Namespace) -> int:
    from coi.config import remotes

    remotes.switch(args.name)
    output.info(f"sessions now go to {args.name} unless --remote or [incus] remote says otherwise")
    return 0


def sync(args: argparse.Namespace) -> int:
    """Bring a running remote session's workspace back now (branch or files)."""
    from coi.commands.common import load_config
    from coi.remote import command

    return command.sync(load_config(args), args.name)


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument("url", metavar="URL", help="https://HOST[:PORT] (8443 by default)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--token", metavar="TOKEN", help="a trust token: incus config trust add NAME")
    how.add_argument("--server-cert", metavar="FILE", help="the server's certificate, to pin")
    how.add_argument(
        "--accept-certificate",
        action="store_true",
        help="pin the certificate the server shows (after checking its fingerprint)",
    )
    p.add_argument("--project", default="default", help="the Incus project (default: default)")


def _list(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["text", "json"], default="text")


def _name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")


COMMANDS: dict[str, Command] = {
    "remote": Command(
        help="Incus servers and clusters sessions can run on",
        sub={
            "add": Command(R + "add", "add a remote: pin its certificate, get trusted", _add),
            "list": Command(R + "list_", "list the remotes (* is the current one)", _list),
            "remove": Command(R + "remove", "forget a remote", _name),
            "switch": Command(R + "switch", "make a remote the default (local: this host)", _name),
        },
    ),
    "sync": Command(
        R + "sync",
        "bring a running remote session's workspace back (branch coi/remote/<slot> or files)",
        _name,
        ("remote", "profile", "workspace"),
    ),
}
