#!/usr/bin/env bash
# Builds the `weft` binary and runs `weft demo`: a throwaway cluster of network namespaces on
# this machine (needs root). Arguments go to `weft demo`, e.g. `scripts/demo.sh --help`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/setup.sh
source scripts/setup.sh

echo "demo: cargo build --release -p weft"
cargo build --release -p weft
exec "${CARGO_TARGET_DIR:-target}/release/weft" demo "$@"
