#!/usr/bin/env bash
# A local stand-in for the official python:3.11-slim-bookworm image, for machines that reach Debian's
# mirror but no container registry: Debian 12 minbase with python3 (3.11.2, the floor), python3-venv
# and ca-certificates, made with debootstrap and imported into podman. Prints the image name.
# The image is keyed by this script's content; its root filesystem is cached as .cache/base/KEY.tar.
# Usage: scripts/local-base.sh [PODMAN...]   (default `podman`; the container tests pass their own store)
set -euo pipefail
cd "$(dirname "$0")/.."
PODMAN=("${@:-podman}")
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
key=$(sha256sum scripts/local-base.sh | cut -c1-12)
name=localhost/cryptoviz-base:$key
if "${PODMAN[@]}" image exists "$name"; then echo "$name"; exit 0; fi
tarball=.cache/base/$key.tar
if [[ ! -s "$tarball" ]]; then
  mkdir -p .cache/base
  root=$(mktemp -d /tmp/cryptoviz-base.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  echo "local-base: debootstrap bookworm into $root" >&2
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$MIRROR" \
    > .cache/base/debootstrap.log 2>&1 || { tail -20 .cache/base/debootstrap.log >&2; exit 1; }
  # Like the official slim image: `python` on PATH; no apt lists or caches, docs, manuals or translations.
  ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
  tar -C "$root" --numeric-owner -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
fi
"${PODMAN[@]}" import --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' "$tarball" "$name" >/dev/null
echo "$name"
