"""A fake model API for the broker's tests and benchmark: HTTPS on the loopback with a
test CA made here, recording the credentials it receives.

Endpoints: /v1/messages (a small JSON answer), /sse?n=N&gap=S (N server-sent events, each
carrying the time it was sent), /oauth/token (a refresh: counted, answers a new token), and
the OpenAI-style /v1/models, /v1/chat/completions and /v1/responses (tests/fakeopenai.py).
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests import fakeopenai


def make_ca(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for host signed by it: (ca, cert, key) PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "coi broker test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = (folder / "ca.pem", folder / "server.pem", folder / "server.key")
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@dataclass
class Recorded:
    """What the fake upstream saw."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    refreshes: int = 0
    token_seq: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Upstream:
    """The running fake: url, the CA that signs it, and what it recorded."""

    def __init__(self, folder: Path) -> None:
        self.ca, cert, key = make_ca(folder)
        self.seen = Recorded()
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _record(self, body: bytes) -> None:
                with seen.lock:
                    seen.requests.append(
                        {
                            "method": self.command,
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body.decode(errors="replace"),
                        }
                    )

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _json(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._record(b"")
                url = urlsplit(self.path)
                if url.path == "/sse":
                    return self._sse(parse_qs(url.query))
                if url.path.endswith("/models"):
                    return self._json(200, fakeopenai.models())
                self._json(200, {"ok": True, "path": url.path})

            def do_POST(self) -> None:
                body = self._body()
                self._record(body)
                if urlsplit(self.path).path == "/oauth/token":
                    with seen.lock:
                        seen.refreshes += 1
                        seen.token_seq += 1
                        n = seen.token_seq
                    time.sleep(0.3)  # a slow endpoint widens the window for a double refresh
                    return self._json(
                        200,
                        {
                            "access_token": f"fresh-access-{n}",
                            "refresh_token": f"fresh-refresh-{n}",
                            "expires_in": 3600,
                        },
                    )
                try:
                    request = json.loads(body or b"{}")
                    stream = bool(request.get("stream"))
                except (ValueError, AttributeError):
                    request, stream = {}, False
                path = urlsplit(self.path).path
                if path.endswith("/responses"):
                    return self._events(fakeopenai.responses_stream(request))
                if path.endswith("/chat/completions"):
                    if stream:
                        return self._events(fakeopenai.chat_stream(request))
                    return self._json(200, fakeopenai.chat(request))
                if stream:
                    return self._message_stream()
                self._json(200, {"type": "message", "content": [{"type": "text", "text": "hi"}]})

            def _events(self, events: Iterable[bytes]) -> None:
                """Server-sent events, each sent as it is written; then the close."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for event in events:
                    self.wfile.write(event)
                    self.wfile.flush()
                self.close_connection = True

            def _message_stream(self) -> None:
                """A Messages API stream answering "pong from the fake upstream"."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                usage = {"input_tokens": 1, "output_tokens": 1}
                message = {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-fake",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": usage,
                }
                events = [
                    ("message_start", {"type": "message_start", "message": message}),
                    (
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": 0,
                            "content_block": {"type": "text", "text": ""},
                        },
                    ),
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": 0,
                            "delta": {"type": "text_delta", "text": "pong from the fake upstream"},
                        },
                    ),
                    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                    (
                        "message_delta",
                        {
                            "type": "message_delta",
                            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": {"output_tokens": 5},
                        },
                    ),
                    ("message_stop", {"type": "message_stop"}),
                ]
                for name, data in events:
                    self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                    self.wfile.flush()
                self.close_connection = True

            def _sse(self, query: dict[str, list[str]]) -> None:
                count = int(query.get("n", ["10"])[0])
                gap = float(query.get("gap", ["0.01"])[0])
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                for i in range(count):
                    event = json.dumps({"i": i, "sent": time.time()})
                    self.wfile.write(f"event: tick\ndata: {event}\n\n".encode())
                    self.wfile.flush()
                    time.sleep(gap)
                self.close_connection = True

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
        self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def credentials(self) -> list[str]:
        """The credential each API request carried (x-api-key or authorization)."""
        return [
            r["headers"].get("x-api-key") or r["headers"].get("authorization", "")
            for r in self.seen.requests
            if not r["path"].startswith("/oauth/")
        ]

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
