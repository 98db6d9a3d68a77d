#!/bin/bash
# An example custom image: the Rust toolchain for the user `code`, on top of `coi`.
#   coi build custom coi-rust --script images/examples/rust.sh
set -euo pipefail
apt-get update -q
apt-get install -y -q --no-install-recommends pkg-config libssl-dev
runuser -l code -c 'curl -fsSL https://sh.rustup.rs | sh -s -- -y --profile minimal'
runuser -l code -c '~/.cargo/bin/rustc --version'
