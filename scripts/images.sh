#!/usr/bin/env bash
# Build the image of every component, named as the chart runs them: REPOSITORY-<target>:TAG
# (REPOSITORY-scraper, -ingester, -dashboard, -operator; the Dockerfile's targets).
# Usage: scripts/images.sh REPOSITORY TAG [build options...], e.g.
#   scripts/images.sh ghcr.io/you/cryptoviz 0.1.0 && PUSH=1 scripts/images.sh ghcr.io/you/cryptoviz 0.1.0
# ENGINE picks the builder (default: docker, else podman); PUSH=1 pushes each image after its build.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 2 ]] || { sed -n '2,7p' "$0" >&2; exit 2; }
repository=$1 tag=$2; shift 2
engine=${ENGINE:-$(command -v docker >/dev/null 2>&1 && echo docker || echo podman)}
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
for target in $(sed -n 's/^FROM runtime AS \([a-z]*\)$/\1/p' Dockerfile); do
  image="$repository-$target:$tag"
  echo "images: $image"
  $engine build --target "$target" --tag "$image" --build-arg VERSION="$tag" --build-arg REVISION="$revision" \
    --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$@" .
  if [[ "${PUSH:-}" == 1 ]]; then $engine push "$image"; fi
done
