#!/usr/bin/env bash
# Build the container's base image from Debian's packages, for a machine that reaches no container
# registry: debootstrap of the host's own Debian release (its Python 3 is the one the pinned stack
# needs), plus the host's uv (the installer BentoML's Dockerfile uses), imported into podman.
# Usage: deploy/container/base-image.sh IMAGE UV_BINARY
# The mirror is read from the host's apt sources, so no host name is written in this repository.
set -euo pipefail
image=${1:?image name, e.g. localhost/rakuten-base:bookworm}
uv_binary=${2:?path to a uv binary}

if podman image exists "$image"; then
  echo "base image $image already present"
  exit 0
fi
# shellcheck disable=SC1091
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:?}")
mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
[ -n "$mirror" ] || { echo "no Debian mirror found in the host's apt sources" >&2; exit 1; }

rootfs=$(mktemp -d /var/tmp/rakuten-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap $suite from $mirror into $rootfs"
# minbase + python3 (3.11 on bookworm): no compiler, no pip; ca-certificates for HTTPS clients.
debootstrap --variant=minbase --include=python3,ca-certificates "$suite" "$rootfs" "$mirror" >/dev/null
install -m 0755 "$uv_binary" "$rootfs/usr/local/bin/uv"
# What a running service never reads: package caches and lists, documentation, man pages, locales.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
find "$rootfs"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'C.*' -exec rm -rf {} +
tar --numeric-owner -C "$rootfs" -c . | podman import --quiet --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "base image $image built ($(podman image inspect "$image" --format '{{.Size}}') bytes)"
