"""The host's OAuth token file, refreshed once for every broker that uses it.

A refresh token rotates when used: two brokers refreshing the same file would leave one
of them (and the host's own tool) with a dead token. So a refresh happens under a file
lock shared by all brokers of this user, and the file is read again after the lock is
taken: the broker that waited finds the fresh token and does not refresh again.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from pathlib import Path
from typing import Any

from coi.broker import rules
from coi.core.lock import file_lock

MARGIN = 300.0  # refresh this many seconds before the token expires
TIMEOUT = 30.0


class TokenFile:
    """One OAuth token file (JSON) and how to refresh it."""

    def __init__(
        self,
        *,
        path: str,
        lock: str,
        token_path: list[str],
        refresh_path: list[str],
        expires_path: list[str],
        token_url: str,
        client_id: str,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.path = Path(path)
        self.lock = Path(lock)
        self.token_path, self.refresh_path = token_path, refresh_path
        self.expires_path = expires_path
        self.token_url, self.client_id = token_url, client_id
        self.tls = tls
        self.refreshes = 0  # refreshes this process made (the tests count the upstream's)

    def read(self) -> dict[str, Any]:
        """The file's JSON ({} when missing or unreadable)."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def current(self) -> str:
        """The access token, refreshed first when it expires within MARGIN ("" none)."""
        data = self.read()
        if self._due(data):
            data = self._refresh_locked()
        token = rules.dig(data, self.token_path)
        return token if isinstance(token, str) else ""

    def _due(self, data: dict[str, Any]) -> bool:
        can = bool(self.token_url and self.refresh_path and rules.dig(data, self.refresh_path))
        return can and rules.needs_refresh(data, self.expires_path, time.time(), MARGIN)

    def _refresh_locked(self) -> dict[str, Any]:
        self.lock.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with file_lock(self.lock, timeout=TIMEOUT + 5, what=f"the refresh of {self.path}"):
            data = self.read()  # another broker may have refreshed while this one waited
            if not self._due(data):
                return data
            answer = self._ask(str(rules.dig(data, self.refresh_path)))
            fresh = rules.refreshed(
                data, answer, self.token_path, self.refresh_path, self.expires_path, time.time()
            )
            self._write(fresh)
            self.refreshes += 1
            return fresh

    def _ask(self, refresh_token: str) -> dict[str, Any]:
        import urllib.request  # only a refresh needs it: not on every broker's start

        body = json.dumps(
            {
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": self.client_id,
            }
        ).encode()
        request = urllib.request.Request(
            self.token_url, body, {"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=self.tls) as reply:
            answer = json.loads(reply.read())
        if not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str):
            raise ValueError(f"{self.token_url} answered without an access_token")
        return answer

    def _write(self, data: dict[str, Any]) -> None:
        """Replace the file atomically, keeping its mode (0600 for a new one)."""
        try:
            mode = self.path.stat().st_mode & 0o777
        except OSError:
            mode = 0o600
        tmp = self.path.with_name(f".{self.path.name}.coi-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
        os.replace(tmp, self.path)
