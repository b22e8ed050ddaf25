#!/usr/bin/env bash
# Make a Debian bookworm base image equivalent to python:3.11-slim-bookworm from Debian packages alone, for
# machines that cannot pull from a public image registry (air-gapped clusters, CI without Docker Hub):
#
#   bash infra/docker/make-base.sh [IMAGE]          # prints the image name it made (or found)
#   bash infra/docker/make-base.sh --print-name     # the default name, keyed by the suite, packages and recipe
#   bash infra/docker/make-base.sh --print-runtime-name     # the name of its runtime flavour (IMAGE-runtime)
#
# debootstrap --variant=minbase with Python 3.11, venv, CA certificates, git (DVC needs it) and binutils, then
# `docker import`, in two flavours:
#   IMAGE          a consistent Debian system (apt-get works as usual): the project images' build stages run on
#                  it (binutils' `strip` trims the shared libraries), and anything that wants a plain base
#   IMAGE-runtime  the same without what the images never run: binutils; perl with its modules (47 MB;
#                  perl-base, which dpkg needs, stays; git's C commands, which DVC, GitPython and MLflow run, need
#                  no perl); git's server and mail programs (daemon, http-backend, shell, imap-send, http-push,
#                  scalar); and identical copies of one file hard-linked (/usr/bin/git and git-core's git).
#                  dpkg then reports git's dependency on perl unmet: to apt-get install in an image built on it,
#                  name perl too (`apt-get install perl …`).
# Neither has translations (/usr/share/locale), docs or man pages.
# Needs root (or sudo), debootstrap and a Debian mirror: $DEBIAN_MIRROR, else the first
# bookworm mirror in this machine's apt sources, else http://deb.debian.org/debian (an internal mirror or
# apt proxy works the same). The root file system is cached as a tarball under
# ${CXR_CACHE:-~/.cache/cxr-mlops}/base/, keyed by the suite, package list and its recipe: the next run, or a machine
# that gets the tarball copied over, imports it without the mirror (tarballs of other keys are removed). Then:
#   cxr image build cpu --offline   (= docker build --build-arg BUILD_BASE=IMAGE --build-arg BASE_IMAGE=IMAGE-runtime …)
set -euo pipefail
# binutils: `strip` for the symbol tables of the shared libraries in the images' build stage (-440 MB)
PACKAGES="python3,python3-venv,python3.11-venv,python3-distutils,ca-certificates,git,binutils"
# what IMAGE-runtime leaves out: binutils and what only it needs; perl and the one perl module git depends on
BUILD_ONLY="binutils binutils-common binutils-x86-64-linux-gnu libbinutils libctf0 libctf-nobfd0 libgprofng0 libjansson4"
NO_PERL="perl libperl5.36 perl-modules-5.36 liberror-perl"
GIT_SERVERS="git-daemon git-http-backend git-shell git-imap-send git-http-push scalar"
SUITE=bookworm
ROOTFS_RECIPE=2   # bump when what the script does to the root file system changes (2: no locales)
RUNTIME_RECIPE=1  # bump when what it does to make IMAGE-runtime changes
# the key of the cached tarball (what the root file system is made of) and of the images (that, and the runtime's)
rootfs_key="$(printf '%s %s %s' "$SUITE" "$PACKAGES" "$ROOTFS_RECIPE" | sha256sum | cut -c1-12)"
key="$(printf '%s %s %s %s %s' "$rootfs_key" "$BUILD_ONLY" "$NO_PERL" "$GIT_SERVERS" "$RUNTIME_RECIPE" \
  | sha256sum | cut -c1-12)"
if [ "${1:-}" = "--print-name" ]; then echo "cxr-mlops-base:$SUITE-$key"; exit 0; fi
if [ "${1:-}" = "--print-runtime-name" ]; then echo "cxr-mlops-base:$SUITE-$key-runtime"; exit 0; fi
image="${1:-cxr-mlops-base:$SUITE-$key}"
runtime_image="$image-runtime"
cache="${CXR_CACHE:-$HOME/.cache/cxr-mlops}/base"
tarball="$cache/$SUITE-$rootfs_key.tar.gz"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

if docker image inspect "$image" >/dev/null 2>&1 && docker image inspect "$runtime_image" >/dev/null 2>&1; then
  echo "$image"; exit 0
fi

if [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null || { echo "make-base.sh: debootstrap not found: apt-get install debootstrap" >&2; exit 5; }
  mirror="${DEBIAN_MIRROR:-}"
  if [ -z "$mirror" ]; then
    mirror="$(grep -rhoE '(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
      | grep -oE 'https?://[^ ]+' | grep -v security | head -n1 || true)"
  fi
  mirror="${mirror:-http://deb.debian.org/debian}"
  root="$(mktemp -d)"
  trap '$SUDO rm -rf "$root"' EXIT
  echo "make-base.sh: debootstrap $SUITE from $mirror (about a minute)" >&2
  $SUDO debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$mirror" >&2 \
    || { echo "make-base.sh: debootstrap failed: is $mirror reachable? (set DEBIAN_MIRROR)" >&2; exit 5; }
  # no apt lists, caches or logs in the image: the same slimming as the official image; no translations either
  # (57 MB: programs print English)
  $SUDO rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/var/log/* "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/*
  mkdir -p "$cache"
  $SUDO tar -C "$root" --numeric-owner -czf "$tarball.partial" . && mv "$tarball.partial" "$tarball"
  find "$cache" -maxdepth 1 -name "$SUITE-*.tar.gz" ! -name "$SUITE-$rootfs_key.tar.gz" -delete
  $SUDO rm -rf "$root"
  trap - EXIT
fi

# python3 and the venv module are the ones the Dockerfiles use (`python3 -m venv /opt/venv`)
changes=(--change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'CMD ["python3"]')
docker import "${changes[@]}" --message "debootstrap --variant=minbase $SUITE + $PACKAGES" "$tarball" "$image" >/dev/null
docker run --rm --network none "$image" python3 -c "import venv, ssl, sys; assert sys.version_info[:2] == (3, 11)" \
  || { echo "make-base.sh: $image has no usable Python 3.11" >&2; exit 1; }
# the runtime flavour: the same root file system with those packages and programs removed, identical files
# hard-linked, flattened into one layer
dedupe='import hashlib, os, sys
first = {}
for root, _, names in os.walk("/usr"):
    for n in sorted(names):
        p = os.path.join(root, n)
        st = os.lstat(p)
        if os.path.islink(p) or st.st_size < 65536 or st.st_nlink > 1:
            continue
        key = (st.st_size, st.st_mode, hashlib.sha256(open(p, "rb").read()).hexdigest())
        if key in first:
            os.link(first[key], p + ".dedupe")
            os.replace(p + ".dedupe", p)
        else:
            first[key] = p'
servers="$(for g in $GIT_SERVERS; do printf '/usr/lib/git-core/%s /usr/bin/%s ' "$g" "$g"; done)"
# shellcheck disable=SC2016  # $0..$3 expand in the container's shell
container="$(docker create --network none "$image" sh -c \
  'dpkg --purge $1 && dpkg --purge --force-depends $2 && rm -f $3 && python3 -c "$0"' \
  "$dedupe" "$BUILD_ONLY" "$NO_PERL" "$servers")"
trap 'docker rm -f "$container" >/dev/null 2>&1 || true' EXIT
docker start -a "$container" >/dev/null 2>&1 \
  || { echo "make-base.sh: making the runtime flavour failed in $image (dpkg --purge, rm, dedupe)" >&2; exit 1; }
docker export "$container" | docker import "${changes[@]}" \
  --message "debootstrap --variant=minbase $SUITE + $PACKAGES, without $BUILD_ONLY $NO_PERL" - "$runtime_image" >/dev/null
# what the images run: Python 3.11 with venv and ssl, git's commands (DVC's); no strip, no perl modules
check='python3 -c "import venv, ssl, sys; assert sys.version_info[:2] == (3, 11)" && cd /tmp && git init -q probe &&
  git -C probe -c user.name=p -c user.email=p@p commit -q --allow-empty -m probe && ! command -v strip && [ ! -d /usr/share/perl ]'
docker run --rm --network none "$runtime_image" sh -c "$check" \
  || { echo "make-base.sh: $runtime_image lacks Python 3.11 or git, or still has binutils or perl's modules" >&2; exit 1; }
echo "$image"
