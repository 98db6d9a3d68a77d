"""The broker's decisions, pure: where a request may go, and the headers it goes with.

A request reaches an upstream only when it names one the tool needs (or names the broker
itself: then the first upstream); anything else, and every CONNECT, is refused. The
headers that leave carry the real credential in place of whatever the container sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# Headers that end at the broker: hop-by-hop ones (RFC 9110 7.6.1), and every header a
# credential travels in, so nothing the container sends reaches the upstream as one.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "upgrade", "trailer", "host"}
)
CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "proxy-authorization", "cookie"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})


@dataclass(frozen=True)
class Upstream:
    """One HTTPS origin the broker forwards to, with an optional path prefix."""

    host: str
    port: int
    prefix: str = ""

    @property
    def authority(self) -> str:
        """host[:port] as the Host header names it (the port only when not 443)."""
        return self.host if self.port == 443 else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Route:
    """Where one request goes: the upstream and the path sent there."""

    upstream: Upstream
    path: str


@dataclass(frozen=True)
class Refusal:
    """Why a request is not forwarded: the status it gets and the host it named."""

    status: int
    reason: str
    named: str


@dataclass(frozen=True)
class Credential:
    """The real credential: kind "key" (an API key) or "oauth" (an access token)."""

    kind: str
    secret: str


def parse_upstream(url: str) -> Upstream:
    """An Upstream from an https URL (ValueError for anything else)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"{url!r} is not an https URL")
    return Upstream(parts.hostname.lower(), parts.port or 443, parts.path.rstrip("/"))


def _authority(host: str, port: int | None, default: int) -> str:
    host = host.lower()
    return host if (port or default) == default else f"{host}:{port}"


def route(
    method: str, target: str, host_header: str, upstreams: Sequence[Upstream]
) -> Route | Refusal:
    """Where a request goes: an absolute target or a Host naming an allowed upstream goes
    there; a Host naming the broker (the loopback) goes to the first upstream."""
    if method.upper() == "CONNECT":
        return Refusal(403, "the broker does not tunnel (CONNECT)", target)
    if "://" in target:  # absolute form: a proxy request naming its host
        parts = urlsplit(target)
        if not parts.hostname:
            return Refusal(400, "malformed request target", target)
        default = 443 if parts.scheme == "https" else 80
        named = _authority(parts.hostname, parts.port, default)
        path = parts.path or "/"
        path += f"?{parts.query}" if parts.query else ""
    else:
        if not target.startswith("/"):
            return Refusal(400, "malformed request target", target)
        named, path = host_header.strip().lower(), target
        if _host_only(named) in LOOPBACK_HOSTS:
            return (
                Route(upstreams[0], upstreams[0].prefix + path)
                if upstreams
                else Refusal(403, "this broker has no upstream", named)
            )
    for upstream in upstreams:
        if named in (upstream.authority, f"{upstream.host}:{upstream.port}"):
            return Route(upstream, upstream.prefix + path)
    return Refusal(403, f"{named or 'no host'} is not an upstream of this tool", named)


def _host_only(authority: str) -> str:
    if authority.startswith("["):
        return authority.split("]")[0] + "]"
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


def rewrite(
    headers: Sequence[tuple[str, str]],
    upstream: Upstream,
    credential: Credential | None,
    key_header: str,
    oauth_headers: Sequence[tuple[str, str]] = (),
) -> list[tuple[str, str]]:
    """The headers sent upstream: the container's, without hop-by-hop and credential
    headers, with Host, the real credential (an OAuth token as Bearer, with the tool's
    oauth_headers merged into any list the request had) and Connection: close."""
    kept = [
        (k, v)
        for k, v in headers
        if k.lower() not in HOP_BY_HOP | CREDENTIAL_HEADERS and not k.lower().startswith("proxy-")
    ]
    out = [("Host", upstream.authority), *kept]
    if credential is not None:
        if credential.kind == "oauth":
            out.append(("Authorization", f"Bearer {credential.secret}"))
            for name, value in oauth_headers:
                out = merge_list_header(out, name, value)
        elif key_header.lower() == "authorization":
            out.append(("Authorization", f"Bearer {credential.secret}"))
        else:
            out.append((key_header, credential.secret))
    out.append(("Connection", "close"))
    return out


def merge_list_header(
    headers: list[tuple[str, str]], name: str, value: str
) -> list[tuple[str, str]]:
    """headers with value added to the comma list of header name (added when absent)."""
    for i, (key, current) in enumerate(headers):
        if key.lower() == name.lower():
            items = [item.strip() for item in current.split(",") if item.strip()]
            if value not in items:
                items.append(value)
            return [*headers[:i], (key, ", ".join(items)), *headers[i + 1 :]]
    return [*headers, (name, value)]


# --- OAuth token file -----------------------------------------------------------------


def dig(data: Any, path: Sequence[str]) -> Any:
    """The value at a key path of nested mappings (None when a step is missing)."""
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def expires_in(data: Any, expires_path: Sequence[str], now: float) -> float | None:
    """Seconds until the token expires (epoch ms or s at expires_path); None: unknown."""
    raw = dig(data, expires_path) if expires_path else None
    if not isinstance(raw, int | float) or isinstance(raw, bool):
        return None
    seconds = raw / 1000 if raw > 1e11 else raw
    return float(seconds - now)


def needs_refresh(data: Any, expires_path: Sequence[str], now: float, margin: float) -> bool:
    """Whether the token file's token expires within margin seconds (unknown: no)."""
    left = expires_in(data, expires_path, now)
    return left is not None and left < margin


def refreshed(
    data: Mapping[str, Any],
    answer: Mapping[str, Any],
    token_path: Sequence[str],
    refresh_path: Sequence[str],
    expires_path: Sequence[str],
    now: float,
) -> dict[str, Any]:
    """The token file after a refresh: the token endpoint's access token, its refresh
    token (when it rotated one) and the expiry (epoch ms), every other key as it was."""
    out: dict[str, Any] = json.loads(json.dumps(data))
    _put(out, token_path, answer["access_token"])
    if answer.get("refresh_token") and refresh_path:
        _put(out, refresh_path, answer["refresh_token"])
    if expires_path and isinstance(answer.get("expires_in"), int | float):
        _put(out, expires_path, int((now + float(answer["expires_in"])) * 1000))
    return out


def _put(data: dict[str, Any], path: Sequence[str], value: Any) -> None:
    for key in path[:-1]:
        data = data.setdefault(key, {})
    data[path[-1]] = value


def audit_record(
    when: float, upstream: str, method: str, path: str, status: int, sent: int
) -> dict[str, Any]:
    """One audit line: never a header or a body, and the path without its query."""
    return {
        "time": round(when, 3),
        "upstream": upstream,
        "method": method,
        "path": path.split("?", 1)[0],
        "status": status,
        "bytes": sent,
    }


# --- git credential helper ------------------------------------------------------------

GIT_PATH = "/_coi/git-credential"


def git_answer(request: str, hosts: Sequence[str], token: str) -> str | None:
    """The answer to a `git credential get` request (key=value lines): the token for an
    https remote whose host a trusted layer listed; None (refused) for anything else."""
    fields = dict(line.split("=", 1) for line in request.splitlines() if "=" in line)
    host = fields.get("host", "").lower()
    if not token or fields.get("protocol") != "https" or host not in {h.lower() for h in hosts}:
        return None
    return f"protocol=https\nhost={host}\nusername=x-access-token\npassword={token}\n"


# --- network requests (coi-request inside) --------------------------------------------

REQUEST_PATH = "/_coi/network-request"
REQUEST_MAX = 4096  # bytes of a request body read: the rest is never looked at


def network_request(body: str, logs: str, container: str) -> tuple[int, str]:
    """(status, message) for coi-request's body `HOST[:PORT]` then a line of why: recorded
    as container's pending request (202), or refused (400; 503 when not taken here)."""
    from pathlib import Path

    from coi.network import pending, pending_store

    if not logs:
        return 503, "coi-request: this session records no requests"
    dest, _, reason = body.partition("\n")
    try:
        host, port = pending.parse_dest(dest.strip())
    except ValueError as exc:
        return 400, f"coi-request: {exc}"
    try:
        item = pending_store.ask(Path(logs), container, host, port, reason)
    except OSError as exc:
        return 503, f"coi-request: could not record it ({exc.strerror or exc})"
    return 202, (
        f"coi-request: asked for {pending.dest_text(host, port)} (request {item}); "
        "a person decides with `coi network pending` on the host"
    )
