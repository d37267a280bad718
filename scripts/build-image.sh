#!/usr/bin/env bash
# Builds the container image of deploy/kubernetes/weft.yaml without a Docker engine and without
# pulling anything from a container registry, and saves it as an OCI archive:
#
#   sudo bash scripts/build-image.sh [--out FILE] [--bin-dir DIR] [--tag NAME]
#                                    [--cache DIR] [--mirror URL]
#
#   --out FILE      the OCI archive to write (default: target/weft-image.oci.tar); load it with
#                   `podman load -i FILE`, or push it with `skopeo copy oci-archive:FILE docker://...`
#   --bin-dir DIR   where the release `weft` and `weft-cni` are (default: target/release, or
#                   $CARGO_TARGET_DIR/release); build them first with
#                   `cargo build --release -p weft -p weft-cni`
#   --tag NAME      the image's name inside the archive (default: localhost/weft:<version>)
#   --cache DIR     keep the Debian root filesystem there, named by a hash of what it is made of,
#                   and reuse it next time (the tests pass target/weft-image/); without it the root
#                   is built anew in a temporary directory
#   --mirror URL    the Debian mirror (default: mmdebstrap's, http://deb.debian.org/debian, plus
#                   bookworm-updates and bookworm-security)
#
# The image holds what deploy/kubernetes/Dockerfile builds: a Debian bookworm root of the
# "minbase" variant (what debian:bookworm-slim is: the Essential and Required packages, apt,
# merged /usr, no documentation or locales) with ca-certificates, iproute2, nftables and kmod
# installed without recommends, then /usr/local/bin/weft and /usr/local/bin/weft-cni (stripped,
# as the Dockerfile does), and the entrypoint /usr/local/bin/weft. The root comes from Debian's packages through mmdebstrap; `podman import`
# turns the tarball into a one-layer image, `podman save` writes the archive. Podman works on a
# storage root of its own in a temporary directory (vfs driver): nothing global is touched.
#
# Needs root (mmdebstrap's root mode and podman's storage), mmdebstrap, podman and strip
# (binutils); on Debian `scripts/setup.sh` installs them. About 35 to 90 s with the mirror's
# downloads, 10 s when --cache has the Debian root. Why each choice: docs/decisions.md
# ("Container image"). Prints the archive's path on the last line.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out="target/weft-image.oci.tar"
bin_dir="${CARGO_TARGET_DIR:-target}/release"
tag=""
cache=""
mirror=()
while (($#)); do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --bin-dir) bin_dir="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --cache) cache="$2"; shift 2 ;;
    --mirror) mirror=("$2"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-image: unknown argument $1" >&2; exit 2 ;;
  esac
done

die() { echo "build-image: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "needs root (mmdebstrap's root mode, podman's storage)"
for tool in mmdebstrap podman tar sha256sum strip; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (on Debian: bash scripts/setup.sh)"
done
for b in weft weft-cni; do
  [[ -x "$bin_dir/$b" ]] || die "no $bin_dir/$b; build it: cargo build --release -p weft -p weft-cni"
done
if [[ -z "$tag" ]]; then
  version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)"
  tag="localhost/weft:${version:-dev}"
fi

# What the Dockerfile installs on debian:bookworm-slim, and how slim is made.
suite=bookworm
packages=ca-certificates,iproute2,nftables,kmod
mm_args=(
  --variant=minbase
  --format=tar
  --include="$packages"
  --aptopt='APT::Install-Recommends "false"'
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin'
)

tmp="$(mktemp -d /tmp/weft-image.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT

# 1. The Debian root, reused from --cache when the same inputs made it before.
key="$(printf '%s\n' "$suite" "${mm_args[@]}" "${mirror[@]}" | sha256sum | cut -c1-16)"
if [[ -n "$cache" ]]; then
  mkdir -p "$cache"
  base="$cache/debian-$suite-$key.tar"
else
  base="$tmp/debian.tar"
fi
if [[ -s "$base" ]]; then
  echo "build-image: reusing $base" >&2
else
  echo "build-image: mmdebstrap $suite (minbase + ${packages//,/ }), about 90 s" >&2
  start=$SECONDS
  if ! mmdebstrap --quiet "${mm_args[@]}" "$suite" "$tmp/debian.part.tar" "${mirror[@]}" \
    >"$tmp/mmdebstrap.log" 2>&1; then
    cat "$tmp/mmdebstrap.log" >&2
    die "mmdebstrap failed"
  fi
  mv "$tmp/debian.part.tar" "$base"
  echo "build-image: Debian root built in $((SECONDS - start)) s" >&2
fi

# 2. The binaries in /usr/local/bin, stripped, owned by root, appended to a copy of the root.
mkdir -p "$tmp/add/usr/local/bin"
install -m 0755 "$bin_dir/weft" "$bin_dir/weft-cni" "$tmp/add/usr/local/bin/"
# Without the debug information of the release profile (debug = 1: 160 MiB of 185), as the .deb.
strip --strip-unneeded "$tmp/add/usr/local/bin/weft" "$tmp/add/usr/local/bin/weft-cni"
if [[ "$base" != "$tmp/debian.tar" ]]; then
  cp "$base" "$tmp/debian.tar"
fi
tar --append -f "$tmp/debian.tar" -C "$tmp/add" --owner=0 --group=0 --numeric-owner \
  ./usr/local/bin/weft ./usr/local/bin/weft-cni

# 3. One layer, the Dockerfile's entrypoint, saved as an OCI archive.
podman=(podman --root "$tmp/storage" --runroot "$tmp/run" --storage-driver vfs
  --events-backend file)
"${podman[@]}" import --quiet \
  --change 'ENTRYPOINT ["/usr/local/bin/weft"]' \
  --message "weft, built by scripts/build-image.sh" \
  "$tmp/debian.tar" "$tag" >/dev/null
mkdir -p "$(dirname "$out")"
rm -f "$out.part"
"${podman[@]}" save --quiet --format oci-archive -o "$out.part" "$tag"
mv "$out.part" "$out"
echo "build-image: $tag, $(du -m "$out" | cut -f1) MiB (uncompressed layer)" >&2
echo "$out"
