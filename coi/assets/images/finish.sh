#!/bin/bash
# Runs last in every coi build: leave nothing in the image that belongs to this build,
# this host or this container.
set -eu

if command -v apt-get >/dev/null; then
    apt-get clean
    rm -rf /var/lib/apt/lists/*
fi
rm -rf /root/.npm /root/.cache /root/.claude /root/.claude.json /root/.claude.json.backup \
    /root/.config/configstore /root/.local/state /tmp/* /var/tmp/* /root/coi-build
# Every container gets its own machine-id on first boot, its own DHCP lease and Docker key.
: > /etc/machine-id
rm -f /var/lib/dhcp/*.leases /etc/docker/key.json
find /var/log -type f -exec truncate -s 0 {} +
