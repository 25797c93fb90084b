#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, only when missing.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v patchelf >/dev/null 2>&1 || missing+=(patchelf)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
command -v node >/dev/null 2>&1 || missing+=(nodejs)  # the browser client's unit tests
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the browser client in headless Chromium
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# TLS peer test (tests/tests/peers_tls.rs): Python websockets for Debian's
# interpreter, Node with npm for the `ws` package below.
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import websockets' >/dev/null 2>&1 \
    || missing+=(python3 python3-websockets)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "system packages present"

# Node's `ws` for the TLS peer test and the permessage-deflate interop
# test, under ~/.cache (not the repository).
if ! command -v npm >/dev/null 2>&1; then
    echo "installing: nodejs npm"
    export DEBIAN_FRONTEND=noninteractive
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq nodejs npm >/dev/null
fi
peers=${WS_PEERS_HOME:-$HOME/.cache/ws-peers}
if [ ! -f "$peers/node_modules/ws/package.json" ]; then
    echo "installing: ws (npm) into $peers"
    mkdir -p "$peers"
    npm install --silent --no-audit --no-fund --prefix "$peers" ws@8 >/dev/null
fi
# Python `websockets` for the permessage-deflate interop test
# (tests/tests/interop.rs), pinned, in a venv beside it.
if ! "$peers/venv/bin/python" -c 'import websockets' >/dev/null 2>&1; then
    echo "installing: websockets (PyPI) into $peers/venv"
    python3 -m venv "$peers/venv"
    "$peers/venv/bin/pip" install -q websockets==15.0.1
fi
echo "peer packages present"
