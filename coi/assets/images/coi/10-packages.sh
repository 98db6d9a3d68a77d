#!/bin/bash
# The coi image, step 1: the pinned apt package set (COI_APT_PACKAGES, from pins.toml).
set -euo pipefail

# Manuals and docs are not read inside a sandbox; keep the copyright files.
cat > /etc/dpkg/dpkg.cfg.d/coi-nodoc <<'CONF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/info/*
CONF

apt-get -o Acquire::Retries=3 update -q
# shellcheck disable=SC2086 # one word per package
apt-get -o Acquire::Retries=3 install -y -q --no-install-recommends $COI_APT_PACKAGES

# Docker starts on first use, through its socket, rather than at every boot: otherwise
# dockerd and containerd take the CPU in the very second a session is getting ready.
if [ -e /lib/systemd/system/docker.socket ]; then
  systemctl disable docker.service containerd.service
  systemctl enable docker.socket
fi
