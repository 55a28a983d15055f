#!/usr/bin/env bash
# Make a Debian base image on this machine with debootstrap, for hosts that reach no image
# registry (the container test uses it): Debian with python3, python3-venv, python3-pip and
# ca-certificates, imported into the engine. Build the project's CPU image on it with
#   bash scripts/docker/build.sh --build-arg BASE_IMAGE=<printed name> --build-arg ACCELERATOR=cpu
#
# Usage: bash scripts/docker/make_base_image.sh
# Example: IMAGE=$(bash scripts/docker/make_base_image.sh)
#   Prints the image name on standard output (progress goes to standard error). The tag is a hash
#   of the suite, package list and mirror: when the engine already has that image, nothing is
#   made again (about 2 minutes otherwise, most of it downloading packages).
# Environment:
#   BASE_IMAGE_NAME         repository name (default: localhost/electra-debian-base)
#   DEBIAN_SUITE            Debian release (default: bookworm, whose Python is 3.11)
#   DEBIAN_MIRROR           package mirror (default: http://deb.debian.org/debian)
#   TMPDIR                  where the root file system is assembled, then deleted (default: /var/tmp)
#   CONTAINER_ENGINE, CONTAINER_ENGINE_FLAGS   as for scripts/docker/build.sh
# Needs root and debootstrap (apt-get install debootstrap).
set -euo pipefail

source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib/args.sh"
electra_help_if_asked "${1:-}"
if (( $# )); then echo "error: unknown argument '$1' (see --help)" >&2; exit 2; fi

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
name="${BASE_IMAGE_NAME:-localhost/electra-debian-base}"
suite="${DEBIAN_SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
packages=python3,python3-venv,python3-pip,ca-certificates
work_root="${TMPDIR:-/var/tmp}"
# shellcheck source=engine.sh
source "$script_dir/engine.sh"

log() { echo "[make_base_image] $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "debootstrap needs root"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing: apt-get install debootstrap"
choose_container_engine

tag="$(printf '%s\n' "$suite" minbase "$packages" "$mirror" | sha256sum | cut -c1-12)"
image="$name:$tag"
# One maker at a time: a second caller waits, then finds the image made.
exec {lock}>"$work_root/electra-base-image-$tag.lock"
flock "$lock"
if "${engine[@]}" image inspect "$image" >/dev/null 2>&1; then
  log "$image exists; reusing it"
  echo "$image"
  exit 0
fi

rootfs="$(mktemp -d "$work_root/electra-base-rootfs.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT
log "debootstrap $suite from $mirror into $rootfs (log: $rootfs.log)"
if ! debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
  tail -n 20 "$rootfs.log" >&2
  die "debootstrap failed (log: $rootfs.log)"
fi
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
log "importing as $image"
# An imported file system has no configuration: give it Debian's PATH and a shell to start.
tar -C "$rootfs" -c . | "${engine[@]}" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["bash"]' - "$image" >/dev/null
rm -f "$rootfs.log"
echo "$image"
