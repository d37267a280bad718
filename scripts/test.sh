#!/usr/bin/env bash
# The project's test command: prepares the machine (scripts/setup.sh), builds every binary in
# release mode and runs the whole test suite. Extra arguments go to `cargo test`, e.g.
#
#   scripts/test.sh                      everything
#   scripts/test.sh -p weft-tests        one package
#   scripts/test.sh -- --nocapture       show the tests' output
#   scripts/test.sh -p weft-tests --test cni    the CNI end-to-end suite only
#
# The network-namespace tests need root; without it they print a note and pass. The CNI suite
# also needs what setup installs as root: cnitool (/usr/local/bin, or $CNITOOL) and the standard
# plugins (/usr/lib/cni, or $CNI_PATH); it runs the release weft-cni built here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/setup.sh
source scripts/setup.sh

# A full run also builds the router at the commit the upgrade test starts from (cached under
# target/), so that tests/tests/upgrade.rs swaps real older routers for this build. Without that
# commit (a shallow clone) the test says so and passes.
if [[ $# -eq 0 && -z "${WEFT_OLD_BIN:-}" ]]; then
  echo "test: scripts/upgrade-test.sh --build-old"
  if old_bin=$(bash scripts/upgrade-test.sh --build-old); then
    export WEFT_OLD_BIN="$old_bin"
  else
    echo "test: no older router to upgrade from; tests/tests/upgrade.rs will be skipped"
  fi
fi

echo "test: cargo build --release --workspace --bins"
cargo build --release --workspace --bins
echo "test: cargo test --release --workspace $*"
cargo test --release --workspace "$@"
