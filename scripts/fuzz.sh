#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ (or only the TARGETs named) for SECONDS seconds (default
# 30), one after the other, after installing cargo-fuzz if it is missing. Exits non-zero if any target finds a crash (the input is left in
# fuzz/artifacts/TARGET/) or fails to build.
#
#   scripts/fuzz.sh 30            # ~30 s per target, plus the build
#   scripts/fuzz.sh 180 gossip_core ipam_records   # the longer runs of docs/fuzzing.md
#   FUZZ_TARGET_DIR=/tmp/f scripts/fuzz.sh 5
#
# Works on the stable toolchain: cargo-fuzz passes a few nightly-only flags to rustc, which
# RUSTC_BOOTSTRAP=1 lets stable accept. The corpus grows in fuzz/corpus/TARGET (not committed);
# the committed seeds in fuzz/seeds/TARGET are read as a second corpus.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

seconds="${1:-30}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -eq 0 ]]; then
  echo "usage: scripts/fuzz.sh SECONDS [TARGET...]" >&2
  exit 2
fi
shift || true

if ! command -v cargo >/dev/null 2>&1 && [[ -f "${HOME:-/root}/.cargo/env" ]]; then
  # shellcheck source=/dev/null
  . "${HOME:-/root}/.cargo/env"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo install cargo-fuzz --locked"
  cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
if [[ -n "${FUZZ_TARGET_DIR:-}" ]]; then
  target_dir="$FUZZ_TARGET_DIR"
elif [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
  target_dir="$CARGO_TARGET_DIR/fuzz"
else
  target_dir="$root/fuzz/target"
fi
# The vswitch code under test is safe Rust built with debug assertions. AddressSanitizer (cargo
# fuzz's default) would instrument only that code, not std and not ring's C and assembly: it finds
# nothing there and costs most of the speed (6 to 10 times fewer runs per second here).
# FUZZ_SANITIZER=address turns it back on.
fuzz_flags=(--sanitizer "${FUZZ_SANITIZER:-none}" --target-dir "$target_dir")

cd fuzz
mapfile -t targets < <(cargo fuzz list)
if [[ $# -gt 0 ]]; then
  for t in "$@"; do
    if ! printf '%s\n' "${targets[@]}" | grep -qx -- "$t"; then
      echo "fuzz: no target $t (cargo fuzz list: ${targets[*]})" >&2
      exit 2
    fi
  done
  targets=("$@")
fi
echo "fuzz: building ${targets[*]}"
cargo fuzz build "${fuzz_flags[@]}"

failed=()
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "seeds/$target"
  echo "fuzz: $target for ${seconds}s"
  if ! cargo fuzz run "${fuzz_flags[@]}" "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1; then
    failed+=("$target")
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"
