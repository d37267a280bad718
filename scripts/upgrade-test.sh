#!/usr/bin/env bash
# Rolling upgrade test (issue 16): builds `weft` at an older commit in a worktree of its own (its
# own target directory: two versions of the same workspace must not share one), then runs
# tests/tests/upgrade.rs with it as WEFT_OLD_BIN: three hosts with IPAM, encrypted and plain,
# start on the old router and are replaced one by one by this checkout's.
#
#   bash scripts/upgrade-test.sh [COMMIT]          build the old router, then run the test
#   bash scripts/upgrade-test.sh --build-old [COMMIT]
#                                                  only build it; print its path (scripts/test.sh)
#
# COMMIT defaults to the pinned one below: the last commit before host keys and signed records
# (the records and the hello changed then), so the run covers mixed-version meshes across that
# change. The old build is cached in target/upgrade-old-target (first time: about 8 minutes of
# 2 cores; then seconds).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PINNED=1472a5f
build_only=false
if [[ "${1:-}" == "--build-old" ]]; then
  build_only=true
  shift
fi
commit="${1:-$PINNED}"
old_src="target/upgrade-old-src"
old_target="$PWD/target/upgrade-old-target"

if ! command -v cargo >/dev/null 2>&1 && [[ -f "${HOME:-/root}/.cargo/env" ]]; then
  # shellcheck source=/dev/null
  . "${HOME:-/root}/.cargo/env"
fi

build_old() {
  local full
  full=$(git rev-parse --verify --quiet "$commit^{commit}") || {
    echo "upgrade-test: commit $commit is not in this clone (a shallow clone?)" >&2
    return 1
  }
  local bin="$old_target/weft-$full"
  if [[ ! -x "$bin" ]]; then
    git worktree remove --force "$old_src" 2>/dev/null || rm -rf "$old_src"
    git worktree prune
    git worktree add --detach "$old_src" "$full" >/dev/null
    echo "upgrade-test: building weft at $full" >&2
    (cd "$old_src" && CARGO_TARGET_DIR="$old_target" cargo build --release --locked -p weft) >&2
    cp "$old_target/release/weft" "$bin"
    git worktree remove --force "$old_src" >/dev/null 2>&1 || true
  fi
  echo "$bin"
}

old_bin=$(build_old)
if $build_only; then
  echo "$old_bin"
  exit 0
fi
echo "upgrade-test: building this checkout ($(git rev-parse --short HEAD))"
cargo build --release --locked -p weft -p weft-cni
cargo build --release --locked -p weft-tests --tests
echo "upgrade-test: running tests/tests/upgrade.rs with WEFT_OLD_BIN=$old_bin"
start=$(date +%s)
WEFT_OLD_BIN="$old_bin" cargo test --release --locked -p weft-tests --test upgrade -- --nocapture
echo "upgrade-test: passed in $(( $(date +%s) - start )) s (old $commit, new $(git rev-parse HEAD))"
