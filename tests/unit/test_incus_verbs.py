"""The adapter's verbs against a small Incus-shaped server on a unix socket (the test's own):
each verb sends the requests it promises, no more, and reads the answer right."""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from coi.core.errors import NotFound
from coi.incus.adapter import Endpoint, Incus


class _Daemon(http.server.BaseHTTPRequestHandler):
    """Answers each (method, path) from `answers` (404 otherwise) and records every request."""

    answers: ClassVar[dict[tuple[str, str], Any]] = {}
    seen: ClassVar[list[tuple[str, str, dict[str, list[str]], Any]]] = []

    def address_string(self) -> str:  # a unix socket has no host
        return "unix"

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        params = urllib.parse.parse_qs(query)
        body = json.loads(raw) if raw.startswith(b"{") else raw
        self.seen.append((method, path, params, body))
        key = (method, path.removeprefix("/1.0/").removeprefix("/1.0"))
        if key in self.answers:
            status, document = 200, {"type": "sync", "metadata": self.answers[key]}
        else:
            status, document = 404, {"type": "error", "error": "not found", "error_code": 404}
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_PUT(self) -> None:
        self._answer("PUT")

    def do_PATCH(self) -> None:
        self._answer("PATCH")

    def do_DELETE(self) -> None:
        self._answer("DELETE")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def incus(tmp_path: Path) -> Iterator[Incus]:
    """The real adapter on the test's own server (stopped afterwards)."""
    path = str(tmp_path / "unix.socket")
    _Daemon.answers, _Daemon.seen = {}, []
    server = _Server(path, _Daemon)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Incus(Endpoint(path), project="p1")
    server.shutdown()
    server.server_close()


def sent() -> list[tuple[str, str]]:
    return [(m, p) for m, p, _, _ in _Daemon.seen]


def test_listing_instances_is_one_request_with_or_without_state(incus: Incus) -> None:
    _Daemon.answers[("GET", "instances")] = [{"name": "c1", "status": "Running"}]
    assert incus.instances() == [{"name": "c1", "status": "Running"}]
    incus.instances(state=True, all_projects=True)
    (_, _, plain, _), (_, _, full, _) = _Daemon.seen
    assert sent() == [("GET", "/1.0/instances")] * 2
    assert plain["recursion"] == ["1"] and "all-projects" not in plain
    assert full["recursion"] == ["2"] and full["all-projects"] == ["true"]


def test_names_of_every_project_are_unquoted_and_lose_their_query(incus: Incus) -> None:
    urls = ["/1.0/instances/c1?project=a", "/1.0/instances/we%20ird?project=b"]
    _Daemon.answers[("GET", "instances")] = urls
    assert incus.instance_names(all_projects=True) == ["c1", "we ird"]
    assert _Daemon.seen[0][2]["all-projects"] == ["true"]


def test_put_instance_writes_back_only_what_a_put_takes(incus: Incus) -> None:
    _Daemon.answers[("PUT", "instances/c1")] = {}
    record = {
        "name": "c1",
        "status": "Running",
        "config": {"a": "1"},
        "devices": {"eth0": {"type": "nic"}},
        "expanded_config": {"x": "y"},
        "profiles": ["default"],
    }
    incus.put_instance("c1", record)
    body = _Daemon.seen[0][3]
    assert sent() == [("PUT", "/1.0/instances/c1")]
    assert body == {
        "config": {"a": "1"},
        "devices": {"eth0": {"type": "nic"}},
        "profiles": ["default"],
        "description": "",
    }


def test_remove_devices_reads_once_and_puts_the_rest(incus: Incus) -> None:
    record = {"config": {}, "devices": {"a": {}, "b": {}}, "description": "kept"}
    _Daemon.answers[("GET", "instances/c1")] = record
    _Daemon.answers[("PUT", "instances/c1")] = {}
    incus.remove_devices("c1", ["a"])
    assert sent() == [("GET", "/1.0/instances/c1"), ("PUT", "/1.0/instances/c1")]
    assert _Daemon.seen[1][3] == {"config": {}, "devices": {"b": {}}, "description": "kept"}


def test_updates_are_one_patch_without_a_read(incus: Incus) -> None:
    _Daemon.answers[("PATCH", "instances/c1")] = {}
    _Daemon.answers[("PATCH", "networks/br")] = {}
    incus.update_instance("c1", {"config": {"user.x": "1"}})
    incus.update_network("br", {"security.acls": "coi-a"})
    assert sent() == [("PATCH", "/1.0/instances/c1"), ("PATCH", "/1.0/networks/br")]
    assert _Daemon.seen[1][3] == {"config": {"security.acls": "coi-a"}}


def test_busy_sees_only_running_operations_on_that_instance(incus: Incus) -> None:
    def op(status: str, *instances: str) -> dict[str, Any]:
        return {
            "status": status,
            "resources": {"instances": [f"/1.0/instances/{i}" for i in instances]},
        }

    _Daemon.answers[("GET", "operations")] = {
        "running": [op("Running", "other"), op("Running", "c1")],
        "success": [op("Success", "c2")],
    }
    assert incus.busy("c1") and not incus.busy("c2") and not incus.busy("c3")
    _Daemon.answers[("GET", "operations")] = {}
    assert not incus.busy("c1")


def test_member_scoped_verbs_name_the_member_and_none_means_here(incus: Incus) -> None:
    _Daemon.answers[("GET", "networks")] = [{"name": "br"}]
    _Daemon.answers[("GET", "networks/br/state")] = {"state": "up"}
    _Daemon.answers[("POST", "storage-pools/p/volumes/custom")] = {}
    incus.networks(target="m2")
    assert incus.network_state("br", target="none") == {"state": "up"}
    incus.create_volume("p", "v", target="m2")
    (_, _, first, _), (_, _, second, _), (_, _, third, body) = _Daemon.seen
    assert first["target"] == ["m2"] and "target" not in second and third["target"] == ["m2"]
    assert body == {"name": "v", "content_type": "filesystem"}


def test_missing_things_read_as_none_or_not_found(incus: Incus) -> None:
    assert incus.storage_pool("nope") is None
    assert incus.network_acl("nope") is None
    assert not incus.has_instance("nope") and not incus.has_image("f00")
    with pytest.raises(NotFound):
        incus.network("nope")
    assert len(_Daemon.seen) == 5  # one request each


def test_the_hosts_template_is_read_by_its_path_and_replaced_by_its_name(incus: Incus) -> None:
    templates = {"/etc/hosts": {"template": "hosts.tpl", "when": ["create"]}}
    _Daemon.answers[("GET", "instances/c1/metadata")] = {"templates": templates}
    _Daemon.answers[("POST", "instances/c1/metadata/templates")] = {}
    assert incus.template_of("c1", "/etc/hosts") == "hosts.tpl"
    assert incus.template_of("c1", "/etc/hostname") == ""
    incus.put_template("c1", "hosts.tpl", b"127.0.0.1 x\n")
    method, path, params, body = _Daemon.seen[-1]
    assert (method, path, params["path"], body) == (
        "POST",
        "/1.0/instances/c1/metadata/templates",
        ["hosts.tpl"],
        b"127.0.0.1 x\n",
    )
