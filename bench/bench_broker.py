"""What the credential broker costs: SSE delay inside a container, added latency per request.

A fake model API (tests/fakeupstream.py) on the host's loopback sends 200 server-sent
events, each stamped with its send time; a client reads them (1) on the host, straight
from the upstream over TLS, and (2) inside a real `coi run --tool claude` session, through
the proxy device and the broker. Containers share the host's clock, so the delay of each
event is its arrival time minus its stamp. Then 30 small requests, one connection each,
direct and through the broker: the median difference is the broker's added latency.
Also the import time of the broker against aiohttp's (COI_BENCH_AIOHTTP_PYTHON names a
python with aiohttp installed). Needs the `coi` image (python3 inside). Run as root or
an Incus admin.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakeupstream import Upstream

EVENTS = int(os.environ.get("COI_BENCH_EVENTS", "200"))
GAP = 0.01
REQUESTS = 30
RUN_ARGS = [str(EVENTS), str(GAP), str(REQUESTS)]

# The client, on the host and inside: argv HOST PORT TLS(0/1) CAFILE EVENTS GAP REQUESTS.
CLIENT = r"""
import json, socket, ssl, sys, time
host, port, tls, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
ctx = ssl.create_default_context(cafile=ca) if tls else None
def conn():
    s = socket.create_connection((host, port))
    return ctx.wrap_socket(s, server_hostname=host) if tls else s
def request(path):
    s = conn()
    head = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nx-api-key: p\r\n"
    s.sendall((head + "Connection: close\r\n\r\n").encode())
    return s
events, buf = [], b""
s = request(f"/sse?n={int(sys.argv[5])}&gap={float(sys.argv[6])}")
while True:
    data = s.recv(65536)
    if not data:
        break
    now = time.time()
    buf += data
    while b"\n\n" in buf:
        block, buf = buf.split(b"\n\n", 1)
        for line in block.split(b"\n"):
            if line.startswith(b"data: "):
                sent = json.loads(line[6:])
                events.append((sent["i"], now - sent["sent"]))
lat = []
for _ in range(int(sys.argv[7])):
    t = time.perf_counter()
    s = request("/v1/x")
    while s.recv(65536):
        pass
    lat.append(time.perf_counter() - t)
print(json.dumps({"events": events, "latency": lat}))
"""


def summary(label: str, result: dict[str, list[float]]) -> dict[str, float]:
    events = result["events"]
    order_ok = [i for i, _ in events] == list(range(EVENTS))
    delays = sorted(d for _, d in events)
    row = {
        "events": len(events),
        "in_order": float(order_ok),
        "delay_p50_ms": statistics.median(delays) * 1000,
        "delay_p99_ms": delays[int(len(delays) * 0.99) - 1] * 1000,
        "delay_max_ms": delays[-1] * 1000,
        "request_median_ms": statistics.median(result["latency"]) * 1000,
    }
    print(
        f"{label}: {row['events']} events, in order: {bool(order_ok)}, delay p50 "
        f"{row['delay_p50_ms']:.1f} ms, p99 {row['delay_p99_ms']:.1f} ms, max "
        f"{row['delay_max_ms']:.1f} ms (goal: each under 50 ms); one request "
        f"{row['request_median_ms']:.1f} ms median"
    )
    return row


def import_time(python: str, statement: str, env: dict[str, str] | None = None) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    runs = [
        float(
            subprocess.run(
                [python, "-c", code], capture_output=True, text=True, check=True, env=env
            ).stdout
        )
        for _ in range(5)
    ]
    return statistics.median(runs)


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    home = Path(tempfile.mkdtemp(prefix="cbb", dir="/tmp"))
    fake = Upstream(home)
    env = {
        **os.environ,
        "HOME": str(home),
        "COI_HOME": str(home / ".coi"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "COI_CONTAINER_PREFIX": "cbench-",
        "BENCH_KEY": "sk-bench",
        "PYTHONPATH": str(root),
    }
    config = home / ".config" / "coi" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        f'[defaults]\nimage = "coi"\n[tools.claude]\nbinary = "claude"\n'
        f'upstreams = ["{fake.url}"]\n[credentials]\napi_key_env = "BENCH_KEY"\n'
        f'ca_file = "{fake.ca}"\n'
    )
    try:
        argv = [sys.executable, "-c", CLIENT, "127.0.0.1", str(fake.port), "1", str(fake.ca)]
        direct = subprocess.run(
            [*argv, *RUN_ARGS],
            capture_output=True,
            text=True,
            check=True,
        )
        host = summary("direct, host -> upstream (TLS)", json.loads(direct.stdout))
        workspace = home / "workspace"
        workspace.mkdir()
        argv = [sys.executable, "-m", "coi", "run", "--tool", "claude", "--", "python3", "-c"]
        inside = subprocess.run(
            [*argv, CLIENT, "127.0.0.1", "41399", "0", "-", *RUN_ARGS],
            capture_output=True,
            text=True,
            env=env,
            cwd=workspace,
            timeout=600,
        )
        if inside.returncode != 0:
            sys.exit(f"coi run failed: {inside.stderr.strip()[-500:]}")
        brokered = summary("inside, container -> broker -> upstream", json.loads(inside.stdout))
        added = brokered["request_median_ms"] - host["request_median_ms"]
        print(f"added latency per request through the broker: {added:.1f} ms (median)")
    finally:
        fake.close()
        shutil.rmtree(home, ignore_errors=True)
    py = sys.executable
    ours = import_time(py, "import coi.broker.server", {**os.environ, "PYTHONPATH": str(root)})
    print(f"import: coi.broker.server (stdlib asyncio + ssl) {ours * 1000:.0f} ms")
    other = os.environ.get("COI_BENCH_AIOHTTP_PYTHON")
    if other:
        theirs = import_time(other, "import aiohttp, aiohttp.web")
        print(f"import: aiohttp + aiohttp.web {theirs * 1000:.0f} ms")


if __name__ == "__main__":
    main()
