"""The credential broker: a per-session host process that holds the tool's real credential.

The container reaches it through an Incus proxy device (bind=container: a loopback port
inside, this host's unix socket outside) and sends a placeholder credential; the broker
swaps in the real API key or OAuth token and forwards to the tool's upstreams over HTTPS.

Layer: between coi.config (it reads tool definitions) and coi.launch (whose teardown
stops it). `rules` is pure, `server` runs in the broker process (stdlib only), `process`
starts, stops and reads brokers, `session` wires one into a session's container.
"""

from __future__ import annotations

# The loopback port inside every container: each container has its own loopback, so one
# fixed port serves them all and the tool's base URL needs no per-session value.
PORT = 41399
PLACEHOLDER = "sk-coi-broker-placeholder-not-a-credential"
