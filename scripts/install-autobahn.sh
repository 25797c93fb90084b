#!/usr/bin/env bash
# Install the Autobahn|Testsuite (`wstest`, Python 2.7 only) on Debian 12.
#
# Debian 12 has no Python 2, so this fetches Debian 11 (bullseye) python2.7
# packages with a *private* apt configuration (the system's sources are not
# touched), unpacks them, points the interpreter's rpath at the bundled
# libssl1.1/libffi7, creates a Python 2.7 virtualenv with virtualenv 20.21.1
# and installs the pinned requirements. See docs/AUTOBAHN.md.
#
# Everything is cached under ${AUTOBAHN_HOME:-$HOME/.cache/ws-autobahn}; a
# second run only checks `wstest -a` and exits.
#
# stdout: the absolute path of `wstest` (last and only line). Logs: stderr.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
unset PYTHONHOME PYTHONPATH || true

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
AB_HOME=${AUTOBAHN_HOME:-$HOME/.cache/ws-autobahn}
PY2ROOT=$AB_HOME/py27-root
VENV=$AB_HOME/venv-py27
WSTEST=$VENV/bin/wstest
STAMP=$VENV/.ws-autobahn-installed

log() { printf 'install-autobahn: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Requirements: prefer the in-repo copy; fall back to the shared one.
REQS=""
for f in "$SCRIPT_DIR/autobahn-requirements-py27.txt" \
         "$REPO/../shared/autobahn/requirements-py27.txt"; do
    if [[ -f $f ]]; then REQS=$f; break; fi
done
[[ -n $REQS ]] || die "requirements file not found (scripts/autobahn-requirements-py27.txt)"
REQS_SUM=$(sha256sum "$REQS" | cut -d' ' -f1)

wstest_ok() {
    [[ -x $WSTEST ]] && [[ -f $STAMP ]] && [[ $(cat "$STAMP") == "$REQS_SUM" ]] &&
        "$WSTEST" -a 2>/dev/null | grep -q '^AutobahnTestSuite'
}

# Fast path, no lock needed.
if wstest_ok; then
    echo "$WSTEST"
    exit 0
fi

mkdir -p "$AB_HOME"
# Serialise concurrent installs (e.g. server and client jobs started together).
exec 9>"$AB_HOME/.lock"
flock -w 900 9 || die "could not lock $AB_HOME/.lock"
if wstest_ok; then
    echo "$WSTEST"
    exit 0
fi

start=$(date +%s)
log "installing into $AB_HOME (requirements: $REQS)"

# --- host tools ------------------------------------------------------------
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "not root and no sudo; install patchelf gcc libc6-dev python3-venv"
    SUDO="sudo -n"
fi

pick_py3() {
    local py
    for py in python3 /usr/bin/python3; do
        if command -v "$py" >/dev/null 2>&1 &&
            "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
            command -v "$py"
            return 0
        fi
    done
    return 1
}

need=()
command -v patchelf >/dev/null || need+=(patchelf)
command -v gcc >/dev/null || need+=(gcc)
[[ -f /usr/include/stdio.h ]] || need+=(libc6-dev)
command -v dpkg-deb >/dev/null || die "dpkg-deb missing (Debian host required)"
[[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] || need+=(debian-archive-keyring)
pick_py3 >/dev/null || need+=(python3 python3-venv)
if ((${#need[@]})); then
    log "apt-get install ${need[*]}"
    if ! $SUDO apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends "${need[@]}" </dev/null >&2; then
        $SUDO apt-get update -q </dev/null >&2
        $SUDO apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends "${need[@]}" </dev/null >&2
    fi
fi
PY3=$(pick_py3) || die "no python3 with venv/ensurepip"

# --- private apt config for bullseye ---------------------------------------
MULTIARCH=$(gcc -print-multiarch 2>/dev/null || true)
[[ -n $MULTIARCH ]] || MULTIARCH=x86_64-linux-gnu
APTDIR=$AB_HOME/apt
DEBDIR=$AB_HOME/debs
PKGS=(python2.7 python2.7-minimal libpython2.7-minimal libpython2.7-stdlib
      libpython2.7 libpython2.7-dev python2.7-dev libssl1.1 libffi7)

# Mirror URIs: the ones /etc/apt already uses for Debian (archive and
# security), overridable with AUTOBAHN_DEBIAN_MIRROR / _SECURITY_MIRROR.
read -r MIRROR SEC_MIRROR < <("$PY3" - <<'EOF'
import glob, os, re
arch, sec = [], []
def add(uris, suites):
    for s in suites:
        if not re.match(r'^[a-z]+(-updates|-security|-backports)?$', s):
            continue
        target = sec if s.endswith('-security') else arch
        for u in uris:
            if u not in target and ('debian' in u):
                target.append(u.rstrip('/'))
files = ['/etc/apt/sources.list'] + sorted(glob.glob('/etc/apt/sources.list.d/*.list'))
for f in files:
    try:
        lines = open(f).read().splitlines()
    except OSError:
        continue
    for l in lines:
        l = l.split('#', 1)[0].strip()
        m = re.match(r'^deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)', l)
        if m:
            add([m.group(2)], [m.group(3)])
for f in sorted(glob.glob('/etc/apt/sources.list.d/*.sources')):
    try:
        text = open(f).read()
    except OSError:
        continue
    for stanza in re.split(r'\n\s*\n', text):
        d = {}
        for l in stanza.splitlines():
            if l.startswith('#') or ':' not in l:
                continue
            k, v = l.split(':', 1)
            d[k.strip().lower()] = v.split()
        if 'deb' not in d.get('types', []) or d.get('enabled', ['yes'])[0] == 'no':
            continue
        add(d.get('uris', []), d.get('suites', []))
a = os.environ.get('AUTOBAHN_DEBIAN_MIRROR') or (arch[0] if arch else 'http://deb.debian.org/debian')
s = os.environ.get('AUTOBAHN_DEBIAN_SECURITY_MIRROR') or (sec[0] if sec else 'http://deb.debian.org/debian-security')
print(a, s)
EOF
)
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

mkdir -p "$APTDIR/etc/sources.list.d" "$APTDIR/etc/preferences.d" \
         "$APTDIR/etc/trusted.gpg.d" "$APTDIR/state/lists/partial" \
         "$APTDIR/cache/archives/partial" "$DEBDIR"
cat >"$APTDIR/etc/sources.list" <<EOF
deb [signed-by=$KEYRING] $MIRROR bullseye main
deb [signed-by=$KEYRING] $SEC_MIRROR bullseye-security main
EOF
APT_OPTS=(
    -o "Dir::Etc=$APTDIR/etc"
    -o "Dir::Etc::sourcelist=sources.list"
    -o "Dir::Etc::sourceparts=sources.list.d"
    -o "Dir::Etc::preferences=preferences"
    -o "Dir::Etc::preferencesparts=preferences.d"
    -o "Dir::Etc::trustedparts=trusted.gpg.d"
    -o "Dir::State=$APTDIR/state"
    -o "Dir::Cache=$APTDIR/cache"
    -o "Dir::Cache::pkgcache=$APTDIR/cache/pkgcache.bin"
    -o "Dir::Cache::srcpkgcache=$APTDIR/cache/srcpkgcache.bin"
    -o "Acquire::Languages=none"
    -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
    -o "APT::Get::List-Cleanup=false"
)
# As root apt drops to `_apt` for downloads, which cannot read $HOME.
[[ $(id -u) -ne 0 ]] || APT_OPTS+=(-o "APT::Sandbox::User=root")

have_all_debs() {
    local p
    for p in "${PKGS[@]}"; do
        compgen -G "$DEBDIR/${p}_*.deb" >/dev/null || return 1
    done
}

if ! have_all_debs; then
    log "fetching bullseye packages from $MIRROR and $SEC_MIRROR"
    apt-get "${APT_OPTS[@]}" -q update </dev/null >&2
    (cd "$DEBDIR" && apt-get "${APT_OPTS[@]}" -q download "${PKGS[@]}" </dev/null >&2)
    have_all_debs || die "apt-get download did not fetch all of: ${PKGS[*]}"
fi

# --- unpack python2.7 --------------------------------------------------------
if [[ ! -x $PY2ROOT/usr/bin/python2.7 ]] || [[ ! -f $PY2ROOT/.complete ]]; then
    rm -rf "$PY2ROOT"
    mkdir -p "$PY2ROOT"
    for deb in "$DEBDIR"/*.deb; do
        dpkg-deb -x "$deb" "$PY2ROOT"
    done
    patchelf --force-rpath --set-rpath "$PY2ROOT/usr/lib/$MULTIARCH" "$PY2ROOT/usr/bin/python2.7"
    touch "$PY2ROOT/.complete"
fi
PY2=$PY2ROOT/usr/bin/python2.7
"$PY2" -c 'import ssl, ctypes, zlib, hashlib' ||
    die "unpacked python2.7 is broken (ssl/ctypes/zlib/hashlib)"

# --- virtualenv 20.21.1 (last one that creates py2.7 envs) -----------------
VVENV=$AB_HOME/venv-virtualenv
if [[ ! -x $VVENV/bin/virtualenv ]] ||
    [[ $("$VVENV/bin/virtualenv" --version 2>/dev/null | awk '{print $2}') != 20.21.1 ]]; then
    rm -rf "$VVENV"
    "$PY3" -m venv "$VVENV"
    "$VVENV/bin/pip" install -q "virtualenv==20.21.1" </dev/null >&2
fi

# --- the py2.7 venv with wstest ------------------------------------------------
rm -rf "$VENV"
"$VVENV/bin/virtualenv" --no-periodic-update -q -p "$PY2" "$VENV" </dev/null >&2
log "pip install -r $(basename "$REQS") (wsaccel compiles)"
CFLAGS="-I$PY2ROOT/usr/include/python2.7 -I$PY2ROOT/usr/include -I$PY2ROOT/usr/include/$MULTIARCH/python2.7" \
    "$VENV/bin/pip" install -q --no-cache-dir --progress-bar off -r "$REQS" </dev/null >&2

version=$("$WSTEST" -a 2>&1) || die "wstest -a failed: $version"
grep -q '^AutobahnTestSuite' <<<"$version" || die "unexpected wstest -a output: $version"
echo "$REQS_SUM" >"$STAMP"
log "$(grep '^AutobahnTestSuite' <<<"$version") installed in $(($(date +%s) - start))s"
echo "$WSTEST"
