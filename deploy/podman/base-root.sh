#!/usr/bin/env bash
# A Debian bookworm root with python3 and python3-venv, as a tarball for `podman import`: the stand-in for
# python:3.11-slim-bookworm where no registry is reachable (tests/deploy/test_images.py builds both images on it).
#
#   deploy/podman/base-root.sh amd64 OUT.tar    # debootstrap, maintainer scripts and all (native)
#   deploy/podman/base-root.sh arm64 OUT.tar    # debootstrap's first stage, then the packages unpacked (no emulation)
#   podman import --arch arm64 OUT.tar localhost/embedserve-base:bookworm-arm64
#
# A foreign root is not configured under emulation: the second stage took ~17 minutes here, almost all of it in
# ca-certificates' maintainer scripts under qemu. Each package is unpacked instead (the files only, as dpkg-deb -x
# does), and what the scripts would have made is written here: /etc/passwd and /etc/group from base-passwd's
# templates. Both roots get this machine's CA bundle (/etc/ssl/certs/ca-certificates.crt, which holds the proxy's
# certificates from /usr/local/share/ca-certificates) so that pip inside a build can reach the package index.
# Needs root, debootstrap and a Debian mirror (MIRROR, default http://deb.debian.org/debian).
set -euo pipefail
arch=${1:?usage: base-root.sh amd64|arm64 OUT.tar}
out=${2:?usage: base-root.sh amd64|arm64 OUT.tar}
suite=${SUITE:-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
packages=python3,python3-venv,ca-certificates
bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

root=$(mktemp -d "${TMPDIR:-/tmp}/embedserve-root.XXXXXX")
trap 'rm -rf "$root"' EXIT
say() { printf 'base-root %s: %s\n' "$arch" "$*" >&2; }

if [ "$arch" = "$(dpkg --print-architecture)" ]; then
  say "debootstrap $suite ($packages)"
  debootstrap --variant=minbase --arch "$arch" --include="$packages" "$suite" "$root" "$mirror" >&2
else
  say "debootstrap --foreign $suite ($packages): download and unpack, no maintainer scripts"
  debootstrap --foreign --variant=minbase --arch "$arch" --include="$packages" "$suite" "$root" "$mirror" >&2
  # The first stage unpacked the required set; the rest lies in the archive cache. Unpack all of it the same way
  # debootstrap does (the /bin, /lib, /sbin links of the merged /usr stay links).
  for deb in "$root"/var/cache/apt/archives/*.deb; do
    dpkg-deb --fsys-tarfile "$deb" | tar -C "$root" --keep-directory-symlink -xf -
  done
  # What base-passwd's preinst makes on a first install; useradd (the Dockerfiles run it) needs both.
  cp "$root/usr/share/base-passwd/passwd.master" "$root/etc/passwd"
  cp "$root/usr/share/base-passwd/group.master" "$root/etc/group"
  rm -rf "$root/debootstrap"
fi
# A container engine mounts its own /proc and /dev (the first stage leaves /proc a link to the host's).
rm -rf "$root/proc" && mkdir -m 555 "$root/proc"
find "$root/dev" -mindepth 1 -delete
mkdir -p "$root/etc/ssl/certs"
cp "$bundle" "$root/etc/ssl/certs/ca-certificates.crt"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root/etc/resolv.conf" "$root/etc/hostname"
tar -C "$root" --numeric-owner -cf "$out.part" .
mv "$out.part" "$out"
say "$(du -h "$out" | cut -f1) in $out"
