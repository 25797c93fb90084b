#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, only when missing.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v patchelf >/dev/null 2>&1 || missing+=(patchelf)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "system packages present"

# Interop peers for tests/tests/interop.rs (permessage-deflate against
# Python `websockets` and Node `ws`), pinned, under ~/.cache/ws-interop
# (or $WS_INTEROP_HOME). Skipped when already installed.
interop=${WS_INTEROP_HOME:-$HOME/.cache/ws-interop}
mkdir -p "$interop"
if ! "$interop/venv/bin/python" -c 'import websockets' >/dev/null 2>&1; then
    echo "installing Python websockets into $interop/venv"
    python3 -m venv "$interop/venv"
    "$interop/venv/bin/pip" install -q websockets==15.0.1
fi
if ! command -v node >/dev/null 2>&1; then
    echo "installing: nodejs npm"
    export DEBIAN_FRONTEND=noninteractive
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -f "$interop/node/node_modules/ws/package.json" ]; then
    echo "installing Node ws into $interop/node"
    mkdir -p "$interop/node"
    (cd "$interop/node" && npm install --silent --no-audit --no-fund ws@8.18.3 >/dev/null)
fi
echo "interop peers present"

