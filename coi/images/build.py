"""The image pipeline's executor: build an image from a recipe and publish it under aliases.

One path for the coi image and custom images: launch a build container from the base
through the launch path, wait for its network (fixing DNS inside when only names fail),
trust the extra CA certificates, run the scripts as root while streaming their output,
record the manifest and check it against the pins, stop, publish, alias, and delete the
build container on every path (failure, Ctrl+C and SIGTERM included). Each build gets a
dated alias NAME-YYYYMMDD-HHMMSS; the moving alias NAME moves only after a good build.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi import __version__
from coi.core import faults, paths, signals
from coi.core.errors import CoiError, IncusError, NotFound
from coi.core.labels import Mode
from coi.core.lock import LockBusy, file_lock
from coi.images import certs, dnsfix, naming, plan
from coi.images.manifest import MANIFEST_PROPERTY, collect, compose
from coi.images.progress import Progress, log_path
from coi.images.publish import compression, current, publish_aliases
from coi.launch import executor
from coi.launch.spec import LABEL, LaunchSpec

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.incus.api import IncusAPI

Log = Callable[[str], None]
INPUTS = "coi.inputs"  # the same key the base image uses
PINS = "coi.pins"
VERSION = "coi.version"
KIND = "coi.kind"
BASE = "coi.base"
NETWORK_TIMEOUT = 60.0
STOP_TIMEOUT = 60
BUILD_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
    "NPM_CONFIG_UPDATE_NOTIFIER": "false",
    "NPM_CONFIG_FUND": "false",
    **certs.ENV,
}


@dataclass(frozen=True)
class BuildResult:
    """What a build made (or found up to date)."""

    alias: str
    fingerprint: str
    inputs: str
    up_to_date: bool
    dated_alias: str = ""
    base: str = ""
    size: int = 0
    seconds: float = 0.0
    log: str = ""
    dns_fixed: bool = False
    certificates: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, lowercase keys."""
        return asdict(self)


# -- what is there ---------------------------------------------------------------------


def resolve_base(incus: IncusAPI, ref: str, log: Log) -> tuple[str, str]:
    """The image source to launch from and its fingerprint ("" for a remote image)."""
    from coi.images.base import ensure_base

    if ref.startswith("debian/"):
        ref = ensure_base(incus, ref, log=log)
    if ":" in ref:
        return ref, ""  # a remote image: IncusAPI fetches it when the container is created
    record = incus.image_alias(ref)
    if record is None:
        raise NotFound(
            f"base image {ref!r} not found: build it first (`coi build` makes `coi`) "
            "or pick one from `coi image list --all`"
        )
    return ref, str(record["target"])


# -- build ----------------------------------------------------------------------------


def build(
    incus: IncusAPI,
    cfg: Config,
    recipe: plan.Recipe,
    *,
    force: bool = False,
    network_timeout: float = NETWORK_TIMEOUT,
    log: Log,
) -> BuildResult:
    """Build recipe unless an image of the same inputs is already its alias's target."""
    started = time.monotonic()
    base, base_fp = resolve_base(incus, recipe.base, log)
    digest = plan.inputs_hash(recipe, base_fp)
    found = None if force else _up_to_date(incus, recipe.alias, digest)
    if found is not None:
        return found
    lock = paths.locks_dir() / f"build-{recipe.alias}.lock"
    try:
        with file_lock(lock, timeout=0, what=f"the build of image {recipe.alias}"):
            found = None if force else _up_to_date(incus, recipe.alias, digest)
            if found is not None:
                return found
            job = _Job(incus, cfg, recipe, base, base_fp, digest, network_timeout)
            return job.run(log, started)
    except LockBusy:
        raise CoiError(
            f"image {recipe.alias} is being built by another coi process ({_holder(lock)}): "
            "wait for it to finish or stop it"
        ) from None


def _up_to_date(incus: IncusAPI, alias: str, digest: str) -> BuildResult | None:
    image = current(incus, alias)
    if image is None or (image.get("properties") or {}).get(INPUTS) != digest:
        return None
    return BuildResult(alias, image["fingerprint"], digest, True, size=int(image.get("size", 0)))


def _holder(lock: Path) -> str:
    try:
        pid = lock.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid else f"lock {lock}"


def _with_log(exc: CoiError, path: Path) -> CoiError:
    """The same failure, its message pointing at the full log; the exit code kept."""
    error = CoiError(f"{exc} (full log: {path})")
    error.exit_code = exc.exit_code
    return error


class _Job:
    """One build: the container, its steps and the publish."""

    def __init__(
        self,
        incus: IncusAPI,
        cfg: Config,
        recipe: plan.Recipe,
        base: str,
        base_fp: str,
        digest: str,
        network_timeout: float,
    ) -> None:
        self.incus, self.cfg, self.recipe = incus, cfg, recipe
        self.base, self.base_fp, self.digest = base, base_fp, digest
        self.network_timeout = network_timeout
        self.name = naming.build_container_name(recipe.alias, secrets.token_hex(3))
        self.dns_fixed = False
        self.folder_made = False
        self.cas: list[str] = []

    def run(self, log: Log, started: float) -> BuildResult:
        path = log_path(self.recipe.alias, paths.ensure(paths.logs_dir()))
        log(f"building image {self.recipe.alias} on {self.base}; full log: {path}")
        with Progress(path) as progress:
            try:
                with signals.raising():
                    fingerprint, dated = self._build(progress)
            except CoiError as exc:
                progress.note(f"build of {self.recipe.alias} failed: {exc}")
                _report(progress, log)
                raise _with_log(exc, path) from exc
            except KeyboardInterrupt:
                progress.note("interrupted: the build container was removed")
                _report(progress, log)
                raise
            _report(progress, log)
        image = self.incus.image(fingerprint)
        return BuildResult(
            alias=self.recipe.alias,
            fingerprint=fingerprint,
            inputs=self.digest,
            up_to_date=False,
            dated_alias=dated,
            base=self.base,
            size=int(image.get("size", 0)),
            seconds=round(time.monotonic() - started, 1),
            log=str(path),
            dns_fixed=self.dns_fixed,
            certificates=self.cas,
            steps=[asdict(s) for s in progress.steps],
        )

    def _build(self, progress: Progress) -> tuple[str, str]:
        try:
            with progress.step("launch"):
                self._launch()
            with progress.step("network"):
                self._network(progress)
            with progress.step("certificates"):
                self.cas = certs.trust_extra_cas(self.incus, self.name, self.cfg, progress.note)
            for script in self.recipe.scripts:
                with progress.step(script.name):
                    self._script(script, progress)
            with progress.step("manifest"):
                manifest = self._manifest()
            with progress.step("finish"):
                self._finish(progress)
            with progress.step("publish"):
                fingerprint = self._publish(manifest)
        finally:
            _teardown(self.incus, self.name)
        with progress.step("aliases"):
            dated = publish_aliases(self.incus, self.recipe.alias, fingerprint)
        progress.note(f"image {self.recipe.alias} is {fingerprint[:12]} (also {dated})")
        return fingerprint, dated

    def _launch(self) -> None:
        faults.point("build-launch")
        spec = LaunchSpec(
            name=self.name,
            image=self.base,
            network_mode=Mode.OPEN.value,
            extra_config={f"{LABEL}build": self.recipe.alias},
        )
        try:
            executor.create(self.incus, spec)
        except NotFound:
            raise
        except IncusError as exc:
            raise CoiError(f"cannot launch the build container from {self.base}: {exc}") from exc

    def _network(self, progress: Progress) -> None:
        build = self.cfg.build
        self.dns_fixed = dnsfix.ensure_network(
            self.incus,
            self.name,
            resolvers=build.dns_resolvers,
            probe_address=build.connectivity_probe,
            bridge=self.cfg.incus.network,
            timeout=self.network_timeout,
            log=progress.note,
        )

    def _script(self, script: plan.Script, progress: Progress) -> None:
        if not self.folder_made:
            self.incus.execute(self.name, ["mkdir", "-p", "-m", "0700", plan.SCRIPT_DIR])
            self.folder_made = True
        self.incus.push_file(self.name, script.path, script.content, mode=0o755)
        faults.point("build-script")
        env = {**BUILD_ENV, **script.env}
        result = self.incus.execute(
            self.name,
            script.argv(),
            env=env,
            cwd="/root",
            raw_stdout=progress.output,
            raw_stderr=progress.output,
        )
        if result.exit_code != 0:
            last = " | ".join(progress.tail(5)) or "no output"
            if "No space left on device" in last:
                raise CoiError(disk_full(f"build script {script.name}", self.cfg, last))
            raise CoiError(f"build script {script.name} exited {result.exit_code}: {last}")

    def _manifest(self) -> dict[str, Any]:
        from coi.config import tools

        known = [tools.resolve(self.cfg, n) for n in tools.known(self.cfg)]
        installed = collect(self.incus, self.name, known)
        problems = plan.check_manifest(self.recipe, installed)
        if problems:
            raise CoiError("the image does not match its pins: " + "; ".join(problems))
        pins = self.recipe.pins.to_dict() if self.recipe.pins else None
        return compose(
            installed,
            alias=self.recipe.alias,
            kind=self.recipe.kind,
            inputs=self.digest,
            base=self.base,
            base_fingerprint=self.base_fp,
            pins=pins,
            coi_version=__version__,
            built=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    def _finish(self, progress: Progress) -> None:
        if self.dns_fixed:
            keep = self.cfg.build.keep_dns_fix
            dnsfix.remove_fix(self.incus, self.name, keep=keep)
            progress.note(
                "the DNS fix stays in the image (build.keep_dns_fix)"
                if keep
                else "the DNS fix was taken out of the image"
            )
        if self.cas:
            certs.remove_extra_cas(self.incus, self.name)
        self._script(plan.finish_script(), progress)

    def _publish(self, manifest: dict[str, Any]) -> str:
        faults.point("build-publish")
        try:
            self.incus.set_state(self.name, "stop", timeout=STOP_TIMEOUT)
        except IncusError:
            self.incus.set_state(self.name, "stop", force=True)
        body: dict[str, Any] = {
            "source": {"type": "instance", "name": self.name},
            "properties": self._properties(manifest),
            "public": False,
        }
        algorithm = compression(self.incus)
        if algorithm:
            body["compression_algorithm"] = algorithm
        try:
            meta = self.incus.publish_image(body, "publishing the build container")
        except IncusError as exc:
            if "no space left" in str(exc).lower():
                raise CoiError(disk_full("publishing the image", self.cfg, str(exc))) from exc
            raise
        return str((meta.get("metadata") or {})["fingerprint"])

    def _properties(self, manifest: dict[str, Any]) -> dict[str, str]:
        pins = self.recipe.pins
        return {
            "description": f"coi image {self.recipe.alias} ({self.recipe.kind}, on {self.base})",
            "os": "Debian" if "Debian" in str(manifest.get("os")) else str(manifest.get("os", "")),
            "architecture": str(manifest.get("architecture", "")),
            INPUTS: self.digest,
            PINS: json.dumps(pins.to_dict() if pins else {}, sort_keys=True),
            VERSION: __version__,
            KIND: self.recipe.kind,
            BASE: f"{self.base}@{self.base_fp}" if self.base_fp else self.base,
            MANIFEST_PROPERTY: json.dumps(manifest, sort_keys=True),
        }


def _report(progress: Progress, log: Log) -> None:
    for line in progress.summary():
        log(line)


def disk_full(where: str, cfg: Config, detail: str) -> str:
    """The one line for a full disk: where, and how to make room."""
    pool = cfg.incus.storage_pool
    return (
        f"disk full during {where} ({detail}): free space in storage pool {pool} "
        f"(`incus storage info {pool}`, `coi image cleanup PREFIX --keep N`) "
        "and under /var/lib/incus, then build again"
    )


def _teardown(incus: IncusAPI, name: str) -> None:
    """Delete the build container; a second Ctrl+C must not stop the cleanup halfway."""
    with signals.shielded():
        executor.teardown(incus, name)
