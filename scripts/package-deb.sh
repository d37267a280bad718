#!/usr/bin/env bash
# Builds the Debian package of Weft with dpkg-deb (no debhelper, no cargo-deb):
#
#   scripts/package-deb.sh [--out DIR] [--bin-dir DIR]
#
#   --out DIR       where weft_<version>_<arch>.deb is written (default: ${CARGO_TARGET_DIR:-target}/debian)
#   --bin-dir DIR   take the release binaries weft and weft-cni from DIR as they are (the tests
#                   pass the suite's own); without it, `cargo build --release -p weft -p weft-cni`
#                   runs first and ${CARGO_TARGET_DIR:-target}/release is used
#
# Prints the path of the .deb. What goes where, and why, is in docs/install.md:
#   /usr/bin/weft, /usr/lib/cni/weft-cni (+ the symlink /opt/cni/bin/weft-cni),
#   /lib/systemd/system/weft.service, /etc/weft/weft.toml (a conffile), completions for bash,
#   zsh and fish, man pages in /usr/share/man/man8, /usr/share/doc/weft/.
# The version is the workspace's (Cargo.toml), the architecture dpkg's. The binaries are
# stripped. The maintainer scripts enable and start nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out="${CARGO_TARGET_DIR:-target}/debian"
bin_dir=
while (($#)); do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --bin-dir) bin_dir="${2:?--bin-dir needs a directory}"; shift 2 ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "package-deb: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

for tool in dpkg-deb dpkg strip objdump gzip; do
  command -v "$tool" >/dev/null || { echo "package-deb: $tool is needed" >&2; exit 1; }
done

if [[ -z "$bin_dir" ]]; then
  cargo build --release -p weft -p weft-cni >&2
  bin_dir="${CARGO_TARGET_DIR:-target}/release"
fi
for b in weft weft-cni; do
  [[ -x "$bin_dir/$b" ]] || { echo "package-deb: no $bin_dir/$b" >&2; exit 1; }
done

# The [workspace.package] version, which every crate inherits.
version="$(awk '/^\[workspace.package\]/ {p = 1; next} /^\[/ {p = 0}
  p && $1 == "version" {gsub(/"/, "", $3); print $3; exit}' Cargo.toml)"
[[ -n "$version" ]] || { echo "package-deb: no version in Cargo.toml" >&2; exit 1; }
built="$("$bin_dir/weft" --version)"
[[ "$built" == "weft $version" ]] || {
  echo "package-deb: $bin_dir/weft says \"$built\", the workspace is $version: rebuild" >&2
  exit 1
}
arch="$(dpkg --print-architecture)"

mkdir -p "$out"
stage="$(mktemp -d "${TMPDIR:-/tmp}/weft-deb.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
root="$stage/weft_${version}_${arch}"
doc="$root/usr/share/doc/weft"
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/cni" "$root/opt/cni/bin" \
  "$root/lib/systemd/system" "$root/etc/weft" "$root/usr/share/man/man8" \
  "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
  "$root/usr/share/fish/vendor_completions.d" "$doc/examples"

# Binaries, without their debug information (the release profile keeps line tables).
install -m 0755 "$bin_dir/weft" "$root/usr/bin/weft"
install -m 0755 "$bin_dir/weft-cni" "$root/usr/lib/cni/weft-cni"
strip --strip-unneeded "$root/usr/bin/weft" "$root/usr/lib/cni/weft-cni"
# Debian's CNI plugins live in /usr/lib/cni; kubelet, containerd and CRI-O look in /opt/cni/bin.
ln -s /usr/lib/cni/weft-cni "$root/opt/cni/bin/weft-cni"

install -m 0644 deploy/systemd/weft.service "$root/lib/systemd/system/weft.service"
install -m 0644 deploy/systemd/weft.toml "$root/etc/weft/weft.toml"

# Generated from the clap definitions of the binary being packaged.
"$bin_dir/weft" completions bash >"$root/usr/share/bash-completion/completions/weft"
"$bin_dir/weft" completions zsh >"$root/usr/share/zsh/vendor-completions/_weft"
"$bin_dir/weft" completions fish >"$root/usr/share/fish/vendor_completions.d/weft.fish"
"$bin_dir/weft" man --dir "$stage/man" >/dev/null
for page in "$stage/man"/*.8; do
  gzip -9n -c "$page" >"$root/usr/share/man/man8/$(basename "$page").gz"
done

# The conflist of docs/cni.md, as an example: installing it would make the container runtime
# use Weft at once, which is the operator's decision.
cat >"$doc/examples/10-weft.conflist" <<'EOF'
{
  "cniVersion": "1.0.0",
  "name": "weft",
  "plugins": [
    {"type": "weft-cni", "stateDir": "/run/weft"},
    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
    {"type": "bandwidth", "capabilities": {"bandwidth": true}}
  ]
}
EOF
cat >"$doc/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: weft

Files: *
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
find "$root" -path "$root/DEBIAN" -prune -o -type f -exec chmod go-w {} +

# The C library version the binaries need: the newest GLIBC_ symbol version they import.
glibc="$(objdump -T "$root/usr/bin/weft" "$root/usr/lib/cni/weft-cni" 2>/dev/null |
  grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1 || true)"
libc_dep="libc6${glibc:+ (>= $glibc)}"

installed_kb="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
cat >"$root/DEBIAN/control" <<EOF
Package: weft
Version: $version
Architecture: $arch
Maintainer: ${WEFT_DEB_MAINTAINER:-Weft developers <weft@example.invalid>}
Installed-Size: $installed_kb
Depends: $libc_dep, libgcc-s1, nftables, procps
Recommends: iproute2, containernetworking-plugins
Section: net
Priority: optional
Description: overlay network for container clusters
 Weft connects the pods of many hosts in one Layer 2 network: a per-host router
 (weft router, a systemd service) that finds its peers over a TCP mesh and
 carries pod frames in UDP, encrypted with a shared secret or over the kernel's
 VXLAN fast path; the weft-cni plugin; cluster IPAM and NetworkPolicy.
 .
 Nothing is enabled at installation: edit /etc/weft/weft.toml, then
 systemctl enable --now weft.
EOF
printf '/etc/weft/weft.toml\n' >"$root/DEBIAN/conffiles"

cat >"$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
# Makes systemd see the unit; enables and starts nothing. On upgrade, restarts a running router
# so that the new binary runs (the pods keep their addresses: the state in /run/weft stays).
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
  if [ -n "$2" ]; then
    systemctl try-restart weft.service || true
  fi
fi
EOF
cat >"$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
# On removal (not upgrade): stop and disable the router. The bridge, the pods' gateways, the
# masquerade table and /run/weft stay; `weft leave` before removal hands the blocks back.
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl disable --now weft.service || true
fi
EOF
cat >"$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
  xargs -0 md5sum) >"$root/DEBIAN/md5sums"

deb="$out/weft_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
