#!/bin/bash
# The coi image, step 2: Node.js and npm at the pinned versions, from the npm registry.
#
# Debian 12's Node.js is 18 and Claude Code 2.1 declares node >= 22. The registry
# publishes each Node.js release as node-linux-<arch> (what `npm install -g node@22`
# fetches); taking it directly avoids Debian's npm, which would pull Node.js 18 and
# some hundred node-* packages. Each tarball is checked against the registry's
# sha512 integrity, as npm itself does.
set -euo pipefail

registry=${COI_NPM_REGISTRY:-https://registry.npmjs.org}
case "$(dpkg --print-architecture)" in
    amd64) arch=x64 openssl=linux-x86_64 ;;
    arm64) arch=arm64 openssl=linux-aarch64 ;;
    *) echo "no Node.js build for $(dpkg --print-architecture) on the npm registry" >&2; exit 1 ;;
esac

fetch() { # package version file
    local meta url want got
    meta=$(curl -fsSL --retry 3 "$registry/$1/$2")
    url=$(jq -r .dist.tarball <<<"$meta")
    want=$(jq -r .dist.integrity <<<"$meta")
    curl -fsSL --retry 3 -o "$3" "$url"
    got="sha512-$(openssl dgst -sha512 -binary "$3" | base64 -w0)"
    if [ "$got" != "$want" ]; then
        echo "$1@$2: integrity mismatch (registry says $want, got $got)" >&2
        exit 1
    fi
    echo "fetched $1@$2 ($want)"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fetch "node-linux-$arch" "$COI_NODE_VERSION" "$work/node.tgz"
tar -xzf "$work/node.tgz" -C /usr/local --strip-components=1 --no-same-owner \
    package/bin/node package/include package/share
# The headers (for node-gyp) carry OpenSSL's configuration for every platform: keep ours.
find /usr/local/include/node/openssl/archs -mindepth 1 -maxdepth 1 ! -name "$openssl" \
    -exec rm -rf {} +

fetch npm "$COI_NPM_VERSION" "$work/npm.tgz"
rm -rf /usr/local/lib/node_modules/npm
mkdir -p /usr/local/lib/node_modules/npm
tar -xzf "$work/npm.tgz" -C /usr/local/lib/node_modules/npm --strip-components=1 --no-same-owner
ln -sf ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm
ln -sf ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx
npm config set --location=global fund false
npm config set --location=global update-notifier false

echo "node $(node --version), npm $(npm --version)"
