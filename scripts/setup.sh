#!/usr/bin/env bash
# Prepares a Debian/Ubuntu machine for building, testing and demoing Weft. Idempotent.
#
#   bash scripts/setup.sh        install what is missing and report
#   source scripts/setup.sh      the same, and keep `cargo` on this shell's PATH
#                                (scripts/test.sh and scripts/demo.sh do this)
#
# As root it installs the system tools the lab, the tests and the demo use with apt-get, running
# `apt-get update` only when a package is missing: iproute2, ping, nftables, tcpdump, iperf3, ...,
# binutils and systemd (for scripts/package-deb.sh and `systemd-analyze verify` in its test),
# mmdebstrap, podman and runc (scripts/build-image.sh and the container image test),
# and Debian's containernetworking-plugins (portmap, bandwidth, tuning in /usr/lib/cni, chained
# after weft-cni by the CNI tests). It builds upstream `cnitool` into /usr/local/bin when it is
# missing (scripts/build-cnitool.sh, from Debian packages; $CNITOOL names another one). It then
# makes sure `cargo` is on PATH, sourcing ~/.cargo/env if needed.

weft_setup() {
  # binutils (strip, objdump) and systemd (systemd-analyze verify): the packaging test.
  # mmdebstrap, podman and runc: the container image (scripts/build-image.sh, tests/tests/image.rs;
  # runc because Debian's crun 1.8 refuses a hybrid cgroup hierarchy).
  local pkgs=(iproute2 iputils-ping nftables tcpdump iperf3 arping ethtool procps
    containernetworking-plugins binutils systemd mmdebstrap podman runc)
  local missing=() pkg

  if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "setup: no dpkg here; make sure these are installed: ${pkgs[*]}" >&2
  else
    for pkg in "${pkgs[@]}"; do
      if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q ' installed$'; then
        missing+=("$pkg")
      fi
    done
    if ((${#missing[@]} == 0)); then
      echo "setup: system packages present: ${pkgs[*]}"
    elif [[ $(id -u) -ne 0 ]]; then
      echo "setup: missing packages: ${missing[*]}" >&2
      echo "setup: not root, so not installing them; the root-only tests will skip" >&2
    else
      echo "setup: installing missing packages: ${missing[*]}"
      export DEBIAN_FRONTEND=noninteractive
      local log
      log="$(mktemp /tmp/weft-setup-apt.XXXXXX)"
      if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
        >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "setup: apt-get failed" >&2
        return 1
      fi
      rm -f "$log"
      echo "setup: installed: ${missing[*]}"
    fi
  fi

  local cnitool="${CNITOOL:-/usr/local/bin/cnitool}" here
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  if [[ -x "$cnitool" ]]; then
    echo "setup: cnitool present: $cnitool"
  elif [[ $(id -u) -ne 0 ]]; then
    echo "setup: no cnitool at $cnitool and not root, so not building it; the CNI tests will fail" >&2
  else
    echo "setup: building cnitool into $cnitool (scripts/build-cnitool.sh)"
    OUT="$cnitool" bash "$here/build-cnitool.sh" || return 1
  fi

  if ! command -v cargo >/dev/null 2>&1 && [[ -f "${HOME:-/root}/.cargo/env" ]]; then
    # shellcheck source=/dev/null
    . "${HOME:-/root}/.cargo/env"
    echo "setup: sourced ${HOME:-/root}/.cargo/env"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install Rust with rustup (https://rustup.rs)" >&2
    return 1
  fi
  echo "setup: $(cargo --version) at $(command -v cargo)"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  weft_setup "$@"
else
  weft_setup "$@"
fi
