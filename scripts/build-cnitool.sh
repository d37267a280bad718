#!/usr/bin/env bash
# Builds upstream `cnitool` (the reference CNI client, v1.1.2, over libcni) from Debian packages
# only, with no network access beyond the machine's own apt sources:
#
#   - golang-go and golang-github-appc-cni-dev (libcni's Go sources in /usr/share/gocode) from apt;
#   - cnitool.go itself from the Debian *source* package golang-github-appc-cni 1.1.2-1, fetched
#     through a private deb-src list derived from the machine's own apt sources (the system's apt
#     configuration and package lists are not touched);
#   - `go build` in GOPATH mode, with the module proxy off.
#
#   OUT=/usr/local/bin/cnitool bash scripts/build-cnitool.sh     (needs root; about 10 s)
#
# Environment: OUT (default /usr/local/bin/cnitool), WORK (scratch dir, default a fresh temp dir,
# removed afterwards), CNI_SRC_VERSION (default 1.1.2-1, the version Debian bookworm ships).
set -euo pipefail

out="${OUT:-/usr/local/bin/cnitool}"
version="${CNI_SRC_VERSION:-1.1.2-1}"
upstream="${version%-*}"

if [[ $(id -u) -ne 0 ]]; then
  echo "build-cnitool: needs root (apt-get)" >&2
  exit 1
fi

work="${WORK:-}"
if [[ -z "$work" ]]; then
  work="$(mktemp -d /tmp/weft-cnitool.XXXXXX)"
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
# apt-get downloads as the user _apt where it can: let it into the scratch directory.
chmod 755 "$work"

export DEBIAN_FRONTEND=noninteractive
need=()
for pkg in golang-go golang-github-appc-cni-dev; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q ' installed$'; then
    need+=("$pkg")
  fi
done
if ((${#need[@]})); then
  if ! apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1; then
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

# A private source list: the machine's binary entries, turned into deb-src entries.
mkdir -p "$work/apt/parts" "$work/apt/lists/partial" "$work/src"
if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
    >"$work/apt/parts/src.sources"
elif [[ -f /etc/apt/sources.list ]]; then
  sed -n 's/^deb /deb-src /p' /etc/apt/sources.list >"$work/apt/parts/src.list"
else
  echo "build-cnitool: no Debian apt sources found to derive a deb-src entry from" >&2
  exit 1
fi
apt_opts=(
  -o Dir::Etc::SourceList=/dev/null
  -o "Dir::Etc::SourceParts=$work/apt/parts"
  -o "Dir::State::Lists=$work/apt/lists"
)
apt-get "${apt_opts[@]}" update -q >/dev/null
(cd "$work/src" && apt-get "${apt_opts[@]}" source --download-only \
  "golang-github-appc-cni=$version" >/dev/null 2>&1) || {
  echo "build-cnitool: could not download the source package golang-github-appc-cni=$version" >&2
  exit 1
}

pkgdir="$work/gopath/src/cnitool"
mkdir -p "$pkgdir"
tar -xJOf "$work/src/golang-github-appc-cni_${upstream}.orig.tar.xz" \
  "golang-github-appc-cni-${upstream}/cnitool/cnitool.go" >"$pkgdir/cnitool.go"

mkdir -p "$(dirname "$out")"
(cd "$pkgdir" && GO111MODULE=off GOPATH="$work/gopath:/usr/share/gocode" GOCACHE="$work/gocache" \
  GOPROXY=off GOFLAGS= CGO_ENABLED=0 go build -o "$out.tmp" .)
mv "$out.tmp" "$out"
echo "build-cnitool: built $out (cnitool $upstream)"
