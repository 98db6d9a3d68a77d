#!/bin/bash
# The coi image, step 4.5: coi-request, with which the agent asks a person to open a
# destination that restricted or allowlist mode refuses. It reaches the host through the
# session's broker (a loopback port that only this container's proxy device serves); the
# request waits in `coi network pending` until a person approves or rejects it.
set -euo pipefail

cat > /usr/local/bin/coi-request <<'REQUEST'
#!/bin/bash
# coi-request HOST[:PORT] "why": ask the person running this session to open HOST.
# Nothing opens until they run `coi network approve` on the host.
set -u
if [ $# -lt 1 ] || [ $# -gt 2 ] || [ -z "$1" ] || [ "${1:0:1}" = "-" ]; then
    echo 'usage: coi-request HOST[:PORT] "why you need it"' >&2
    exit 2
fi
export LC_ALL=C  # ${#body} counts bytes
body="$1"$'\n'"${2:-}"
if ! exec 3<>/dev/tcp/127.0.0.1/41399; then
    echo "coi-request: no coi broker in this session: ask the person at the host instead" >&2
    exit 1
fi
printf 'POST /_coi/network-request HTTP/1.1\r\nHost: 127.0.0.1:41399\r\n' >&3
printf 'Content-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n' \
    "${#body}" >&3
printf '%s' "$body" >&3
IFS= read -r -t 30 status <&3 || status=""
while IFS= read -r -t 30 line <&3 && [ "${line%$'\r'}" != "" ]; do :; done
message=$(head -c 4096 <&3)
exec 3<&-
case "$status" in
    "HTTP/1.1 202"*) echo "$message"; exit 0 ;;
    *) echo "${message:-coi-request: no answer from the broker}" >&2; exit 1 ;;
esac
REQUEST
chmod 0755 /usr/local/bin/coi-request
