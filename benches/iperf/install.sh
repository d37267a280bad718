#!/usr/bin/env bash
# Installs what benches/iperf/run.sh needs. Idempotent: installs only what is missing.
#
#   sudo bash benches/iperf/install.sh
#
# From Debian: iproute2 (ip, bridge), iputils-ping, iperf3, tinc, nebula (nebula, nebula-cert),
# wireguard-tools (wg). From crates.io: boringtun-cli (a userspace WireGuard), with
# `cargo install --locked`. Nothing here touches the network configuration of the machine.
# A package that cannot be installed is reported and skipped: run.sh then prints its row as n/a.
set -uo pipefail

log() { printf 'install: %s\n' "$*" >&2; }

# cargo's bin directory is often not on root's PATH under sudo.
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$PATH:/usr/sbin:/sbin:$cargo_bin"

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root (apt-get install)"
    exit 1
fi

# Debian package -> a command it provides.
declare -A APT_CMD=(
    [iproute2]=ip
    [iputils-ping]=ping
    [iperf3]=iperf3
    [sockperf]=sockperf
    [iptables]=iptables-restore
    [tinc]=tincd
    [nebula]=nebula
    [wireguard-tools]=wg
)

missing=()
for pkg in "${!APT_CMD[@]}"; do
    command -v "${APT_CMD[$pkg]}" >/dev/null 2>&1 || missing+=("$pkg")
done

status=0
if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    start=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || log "apt-get update failed"
    # One by one, so that a package that is not available does not stop the others.
    for pkg in "${missing[@]}"; do
        if ! apt-get install -y -qq --no-install-recommends "$pkg" >&2; then
            log "could not install $pkg"
            status=1
        fi
    done
    log "apt-get took $((SECONDS - start)) s"
else
    log "Debian packages already installed"
fi

# boringtun-cli, from crates.io (Debian has no package for it).
if command -v boringtun-cli >/dev/null 2>&1; then
    log "boringtun-cli already installed"
elif ! command -v cargo >/dev/null 2>&1; then
    log "cargo not found: cannot install boringtun-cli"
    status=1
else
    log "cargo install --locked boringtun-cli (a few minutes)"
    start=$SECONDS
    # A target directory of its own (not the project's, nor $CARGO_TARGET_DIR), removed after.
    build_dir=$(mktemp -d "${TMPDIR:-/tmp}/weft-iperf-boringtun.XXXXXX")
    if CARGO_TARGET_DIR=$build_dir cargo install --locked boringtun-cli >&2; then
        log "boringtun-cli installed in $((SECONDS - start)) s"
    else
        log "could not build boringtun-cli"
        status=1
    fi
    rm -rf "$build_dir"
fi
exit "$status"
