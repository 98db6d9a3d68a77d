"""The credential broker: a per-session host process that holds the tool's real credential.

The container reaches it through an Incus proxy device (bind=container: a loopback port
inside, this host's unix socket outside) and sends a placeholder credential; the broker
swaps in the real API key or OAuth token and forwards to the tool's upstreams over HTTPS.

Why a proxy device and a unix socket, not the bridge address and a port opened in the
nft rules: it works in every network mode (a restricted container starts without a NIC)
with no firewall change, only the container that has the device can reach it, and the
socket's 0700 folder keeps other host users out. Incus's forkproxy (root, on the host)
connects to the user's socket as expected (tried here: Incus 6.0.4). Why the standard
library, not aiohttp: no new dependency, and a pass-through of one request per
connection needs no more; bench/bench_broker.py measured (two runs, a loaded 2-core
host) an import of 0.09-0.25 s against aiohttp's 0.25-0.9 s, 1.3-4.6 ms added per
request (container, proxy device and broker against a direct TLS request from the host)
and SSE events inside within 0.3 ms of a direct connection (median; p99 and max track
the direct ones, under 50 ms).

Layer: between coi.config (it reads tool definitions) and coi.launch (whose teardown
stops it). `rules` is pure, `server` runs in the broker process (stdlib only), `process`
starts, stops and reads brokers, `session` wires one into a session's container.
"""

from __future__ import annotations

# The loopback port inside every container: each container has its own loopback, so one
# fixed port serves them all and the tool's base URL needs no per-session value.
PORT = 41399
PLACEHOLDER = "sk-coi-broker-placeholder-not-a-credential"
