#!/usr/bin/env bash
# Build the operator's OCI image offline, without Docker, from real parts:
#   layer 1  a Debian bookworm root filesystem made by mmdebstrap from Debian's packages (python3.11,
#            ca-certificates; man pages, docs and locales left out), cached by its recipe;
#   layer 2  /opt/kubepam: a venv made by that root filesystem's own python3.11, holding this checkout's
#            wheel and its pinned dependencies (the versions the test venv runs), byte-compiled;
# assembled with umoci into an OCI image layout: user 65532:65532, entrypoint ["kubepam"], cmd ["run"],
# org.opencontainers.image.* labels. Reproducible: with the same SOURCE_DATE_EPOCH (default: the last
# commit's time), the same checkout and the same Debian and PyPI contents, two builds give the same
# manifest digest.
#
#   hack/image.sh [--out DIR] [--tag TAG] [--no-cache] [--check-reproducible]
#
#   --out DIR              the OCI layout to write (default: ~/.cache/kubepam/image/oci); replaced whole
#   --tag TAG              the tag in the layout (default: the version in pyproject.toml)
#   --no-cache             build every part anew: the Debian root filesystem, the wheels, the venv of the
#                          dependencies (the cache in ~/.cache/kubepam/image is neither used nor changed)
#   --check-reproducible   build a second time, from the same copy of the sources, into a temporary
#                          layout; print `reproducible` or fail unless the two digests are the same
#
# Prints `oci:DIR:TAG`, the manifest digest and the sizes (then the check's verdict). Needs root
# (mmdebstrap's root mode, chroot, an overlay mount); installs mmdebstrap, umoci and runc with apt-get
# when missing. The second build of --check-reproducible gets the first one's copy of the sources and
# its revision label through KUBEPAM_IMAGE_SRC and KUBEPAM_IMAGE_REVISION.
set -euo pipefail
umask 022
export LC_ALL=C.UTF-8 TZ=UTC

OUT="" TAG="" NO_CACHE=0 CHECK=0
while (($#)); do
  case $1 in
    --out) OUT=$2; shift 2 ;;
    --tag) TAG=$2; shift 2 ;;
    --no-cache) NO_CACHE=1; shift ;;
    --check-reproducible) CHECK=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done

if [[ $(id -u) -ne 0 ]]; then
  echo "hack/image.sh needs root (mmdebstrap's root mode and chroot): run it with sudo" >&2
  exit 1
fi
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v umoci >/dev/null || need+=(umoci)
command -v runc >/dev/null || need+=(runc) # not used here: tests/e2e/test_image.py runs the image with it
if ((${#need[@]})); then
  echo "installing Debian packages: ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The test venv: its pip builds the wheel, and its exact versions pin the image's dependencies.
KUBEPAM_ENV_ONLY_PYTHON=1 source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
unset PIP_FIND_LINKS PIP_NO_INDEX PIP_INDEX_URL PIP_EXTRA_INDEX_URL # only PyPI and the wheels fetched here
IMAGE_CACHE="$CACHE/image"
OUT=${OUT:-$IMAGE_CACHE/oci}
mkdir -p "$IMAGE_CACHE" "$(dirname "$OUT")"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
VERSION=$(python -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
TAG=${TAG:-$VERSION}
if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
fi
export SOURCE_DATE_EPOCH
CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
# The app layer is built from the work tree: say so in the revision when it differs from the commit.
# (--check-reproducible's second build gets the first one's revision and sources: other people may
# commit or edit in between.)
REVISION=${KUBEPAM_IMAGE_REVISION:-}
if [[ -z $REVISION ]]; then
  REVISION=$(git rev-parse HEAD)
  if [[ -n $(git status --porcelain -- pyproject.toml README.md operator) ]]; then
    REVISION="$REVISION-dirty"
  fi
fi

exec 9>"$IMAGE_CACHE/.lock"
flock 9 # one build at a time per cache (the test suite and a person may both ask)

# ----- layer 1: the Debian root filesystem -------------------------------------------------------
# Its timestamps are clamped to BASE_EPOCH, a constant of this recipe (not the commit's time), so the
# cached tarball serves every commit; the app layer and the image config carry SOURCE_DATE_EPOCH.
BASE_EPOCH=1767225600 # 2026-01-01T00:00:00Z
BASE_SUITE=bookworm
BASE_VARIANT=apt
BASE_PACKAGES=(python3.11 python3 ca-certificates)
BASE_MIRROR=http://deb.debian.org/debian
BASE_SECURITY=http://deb.debian.org/debian-security
BASE_OPTS=(
  --variant="$BASE_VARIANT"
  --include="$(IFS=,; echo "${BASE_PACKAGES[*]}")"
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr # merged /usr without the usrmerge package (and perl)
  --aptopt='APT::Install-Recommends "false"'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/lintian/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
)

build_base() { # $1: the tarball to write (and $1.packages: the package versions in it)
  local dir rootfs
  dir=$(mktemp -d "$WORK/base.XXXXXX")
  rootfs="$dir/rootfs"
  SOURCE_DATE_EPOCH=$BASE_EPOCH TMPDIR=$dir mmdebstrap --mode=root --format=directory --quiet \
    "${BASE_OPTS[@]}" "$BASE_SUITE" "$rootfs" \
    "deb $BASE_MIRROR $BASE_SUITE main" \
    "deb $BASE_MIRROR $BASE_SUITE-updates main" \
    "deb $BASE_SECURITY $BASE_SUITE-security main" >"$dir/mmdebstrap.log" 2>&1 \
    || { tail -40 "$dir/mmdebstrap.log" >&2; return 1; }
  # Device nodes are the runtime's business (and a rootless unpack cannot create them).
  find "$rootfs/dev" -mindepth 1 -delete
  # The runtime bind-mounts these; empty files keep the layer the same on every host.
  : >"$rootfs/etc/resolv.conf"
  : >"$rootfs/etc/hostname"
  # The image's user, named so that tools which look uids up find it (no home, shell or password).
  echo "kubepam:x:65532:65532:kubepam:/nonexistent:/usr/sbin/nologin" >>"$rootfs/etc/passwd"
  echo "kubepam:x:65532:" >>"$rootfs/etc/group"
  # Debian compiles the standard library at install time into timestamp-checked .pyc files; clamped
  # timestamps would make them stale (recompiled on every start, never saved on a read-only root).
  # Rewrite them as unchecked-hash .pyc files, which name no time at all.
  chroot "$rootfs" /usr/bin/env -i PYTHONHASHSEED=0 /usr/bin/python3.11 -c '
import pathlib, py_compile
for pyc in sorted(pathlib.Path("/usr/lib").rglob("__pycache__/*.cpython-311.pyc")):
    src = pyc.parent.parent / (pyc.name[: -len(".cpython-311.pyc")] + ".py")
    if src.is_file():
        py_compile.compile(str(src), str(pyc), doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
'
  chroot "$rootfs" dpkg-query -W -f '${Package}\t${Version}\n' >"$1.packages.tmp"
  tar_layer "$rootfs" "$1.tmp" "$BASE_EPOCH" --clamp-mtime .
  mv "$1.packages.tmp" "$1.packages"
  mv "$1.tmp" "$1"
  rm -rf "$dir"
}

# tar_layer ROOT OUT EPOCH [--clamp-mtime] PATH...: a deterministic uncompressed layer tarball: sorted
# names, numeric owners, no atime/ctime, mtimes set to (or, with --clamp-mtime, at most) EPOCH.
tar_layer() {
  local root=$1 out=$2 epoch=$3
  shift 3
  tar -C "$root" --sort=name --format=pax \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --numeric-owner --mtime="@$epoch" --no-acls --no-xattrs --no-selinux -cf "$out" "$@"
}

# The cache key: everything that goes into the tarball, this recipe's code included.
base_key=$(printf '%s\n' "$BASE_EPOCH" "$BASE_SUITE" "$BASE_MIRROR" "$BASE_SECURITY" "${BASE_OPTS[@]}" \
  "$(declare -f build_base tar_layer)" "$(mmdebstrap --version)" | sha256sum | cut -c1-16)
BASE_TAR="$IMAGE_CACHE/base-$base_key.tar"
WORK=$(mktemp -d "$IMAGE_CACHE/work.XXXXXX")
MOUNTS=()
cleanup() {
  local m
  for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

t0=$SECONDS
if ((NO_CACHE)); then
  BASE_TAR="$WORK/base.tar"
  build_base "$BASE_TAR"
elif [[ ! -f $BASE_TAR ]]; then
  echo "building the Debian root filesystem (mmdebstrap, once per recipe) ..." >&2
  build_base "$BASE_TAR"
fi
t_base=$((SECONDS - t0))

# ----- layer 2: /opt/kubepam ----------------------------------------------------------------------
constraints="$WORK/constraints.txt"
pip freeze --exclude-editable | grep -v '^kubepam[= ]' >"$constraints"
python -c 'import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
  >"$WORK/requirements.txt"
PIP_VERSION=$(pip --version | cut -d' ' -f2)
wheels_key=$(cat "$constraints" "$WORK/requirements.txt" <(echo "pip==$PIP_VERSION") | sha256sum | cut -c1-16)
WHEELS="$IMAGE_CACHE/wheels-$wheels_key"
((NO_CACHE)) && WHEELS="$WORK/wheels"
if [[ ! -f $WHEELS/.complete ]]; then
  rm -rf "$WHEELS"
  pip wheel --quiet --wheel-dir "$WHEELS" -c "$constraints" -r "$WORK/requirements.txt"
  pip download --quiet --no-deps --dest "$WHEELS" "pip==$PIP_VERSION"
  touch "$WHEELS/.complete"
fi

# This checkout's wheel, from the work tree's files (what the tests ran), not from the repository's
# caches: tracked and new files under operator/, pyproject.toml and README.md (the package's readme).
SRC="$WORK/src"
mkdir -p "$SRC"
if [[ -n ${KUBEPAM_IMAGE_SRC:-} ]]; then
  cp -a "$KUBEPAM_IMAGE_SRC/." "$SRC/"
else
  git ls-files -z --cached --others --exclude-standard --deduplicate -- pyproject.toml README.md operator \
    | while IFS= read -r -d '' f; do [[ -f $f ]] && printf '%s\0' "$f"; done \
    | grep -zv -e '\.egg-info/' -e '__pycache__' | xargs -0 cp --parents -t "$SRC"
fi
cp -a "$SRC" "$WORK/src-pristine" # what --check-reproducible builds again (the wheel build writes to $SRC)
# Built by setuptools' PEP 517 hook in a venv with exactly [build-system] requires, made once and cached
# (pip's isolated build makes that venv anew every time).
BUILD_REQUIRES=$(python -c 'import tomllib
print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')
BUILDENV="$IMAGE_CACHE/buildenv-$( (echo "$BUILD_REQUIRES"; python --version) | sha256sum | cut -c1-16)"
((NO_CACHE)) && BUILDENV="$WORK/buildenv"
if [[ ! -f $BUILDENV/.complete ]]; then
  rm -rf "$BUILDENV"
  python -m venv "$BUILDENV"
  # shellcheck disable=SC2086 # one word per requirement
  "$BUILDENV/bin/pip" install --quiet $BUILD_REQUIRES
  touch "$BUILDENV/.complete"
fi
mkdir "$WORK/app-wheel"
(cd "$SRC" && "$BUILDENV/bin/python" -c 'import sys, setuptools.build_meta as b; b.build_wheel(sys.argv[1])' \
  "$WORK/app-wheel" >"$WORK/wheel.log" 2>&1) || { tail -30 "$WORK/wheel.log" >&2; exit 1; }

# The Debian root filesystem unpacked once beside its tarball: its own python3.11 builds the venv in a
# chroot, on an overlay (writes go to a scratch directory; the unpacked copy is never changed).
BASE_ROOTFS="${BASE_TAR%.tar}.rootfs"
if [[ ! -d $BASE_ROOTFS ]]; then
  rm -rf "$BASE_ROOTFS.tmp"
  mkdir "$BASE_ROOTFS.tmp"
  tar -C "$BASE_ROOTFS.tmp" --same-owner -xpf "$BASE_TAR"
  mv "$BASE_ROOTFS.tmp" "$BASE_ROOTFS"
fi

# overlay_root DIR LOWER...: DIR shows the LOWER directories (first on top) and takes the writes.
overlay_root() {
  local root=$1 lower
  shift
  mkdir -p "$root" "$root.upper" "$root.work"
  lower=$(IFS=:; echo "$*")
  if mount -t overlay overlay -o "lowerdir=$lower,upperdir=$root.upper,workdir=$root.work" "$root" 2>/dev/null
  then
    MOUNTS+=("$root")
  else # no overlayfs here (say, inside a container): copies, bottom first
    local i
    for ((i = $#; i > 0; i--)); do cp -a "${!i}/." "$root/"; done
  fi
  [[ -e $root/dev/null ]] || mknod -m 666 "$root/dev/null" c 1 3 # for pip's subprocesses; in no layer
  mkdir -p "$root/tmp/wheels"
}
in_root() { # in_root DIR COMMAND...
  local root=$1
  shift
  chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
    PYTHONHASHSEED=0 SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" "$@"
}
PIP_IN_ROOT=(/opt/kubepam/bin/python "/tmp/wheels/pip-$PIP_VERSION-py3-none-any.whl/pip")
PIP_INSTALL=(install --quiet --no-index --find-links /tmp/wheels -c /tmp/wheels/constraints.txt --no-compile
  --no-cache-dir --disable-pip-version-check --no-warn-script-location)
# Byte-compiled here (the root filesystem is read-only at run time) into unchecked-hash .pyc files: no
# timestamps, the same bytes every build.
COMPILE=(/opt/kubepam/bin/python -m compileall -q -j1 --invalidation-mode unchecked-hash)

# The venv with the dependencies only, cached by the base, the wheels and this recipe: kubepam's own
# wheel (the part that changes) goes on top of it for each build.
build_deps() { # $1: the directory to write (holding opt/kubepam)
  local root="$WORK/deps-root"
  overlay_root "$root" "$BASE_ROOTFS"
  cp "$WHEELS"/*.whl "$constraints" "$WORK/requirements.txt" "$root/tmp/wheels/"
  in_root "$root" /usr/bin/python3.11 -m venv --without-pip /opt/kubepam
  in_root "$root" "${PIP_IN_ROOT[@]}" "${PIP_INSTALL[@]}" -r /tmp/wheels/requirements.txt
  # kubernetes.aio (the client's asyncio twin, never imported by kubepam) stays source only.
  in_root "$root" "${COMPILE[@]}" -x '/kubernetes/aio/' /opt/kubepam/lib >/dev/null
  # As if kubepam alone had been asked for: only its dist-info says REQUESTED.
  rm -f "$root"/opt/kubepam/lib/python3.11/site-packages/*.dist-info/{REQUESTED,direct_url.json}
  rm -f "$root/opt/kubepam/bin/Activate.ps1"
  rm -rf "$1.tmp"
  mkdir -p "$1.tmp"
  cp -a "$root/opt" "$1.tmp/"
  mv "$1.tmp" "$1"
}
deps_key=$(printf '%s\n' "$base_key" "$wheels_key" "$(declare -f build_deps overlay_root in_root)" \
  "${PIP_INSTALL[@]}" "${COMPILE[@]}" | sha256sum | cut -c1-16)
DEPS="$IMAGE_CACHE/deps-$deps_key"
((NO_CACHE)) && DEPS="$WORK/deps"
[[ -d $DEPS ]] || build_deps "$DEPS"

ROOTFS="$WORK/rootfs"
overlay_root "$ROOTFS" "$DEPS" "$BASE_ROOTFS"
cp "$WHEELS/pip-$PIP_VERSION-py3-none-any.whl" "$WORK"/app-wheel/*.whl "$constraints" "$ROOTFS/tmp/wheels/"
in_root "$ROOTFS" "${PIP_IN_ROOT[@]}" "${PIP_INSTALL[@]}" --no-deps "kubepam==$VERSION"
# Every dependency there, in a version that fits.
broken=$(in_root "$ROOTFS" "${PIP_IN_ROOT[@]}" check) || { echo "$broken" >&2; exit 1; }
in_root "$ROOTFS" "${COMPILE[@]}" /opt/kubepam/lib/python3.11/site-packages/kubepam >/dev/null
APP_TAR="$WORK/app.tar"
tar_layer "$ROOTFS" "$APP_TAR" "$SOURCE_DATE_EPOCH" ./opt
t_app=$((SECONDS - t0 - t_base))

# ----- the OCI image layout ----------------------------------------------------------------------
# A layout holding just the Debian layer, made once per base (compressing it takes seconds); each build
# starts from a copy whose blobs are hard links (umoci never changes a blob, it writes new ones).
BASE_OCI="${BASE_TAR%.tar}.oci"
if [[ ! -d $BASE_OCI ]]; then
  rm -rf "$BASE_OCI.tmp"
  umoci init --layout "$BASE_OCI.tmp"
  umoci new --image "$BASE_OCI.tmp:base"
  umoci raw add-layer --image "$BASE_OCI.tmp:base" \
    --history.created "$(date -u -d "@$BASE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)" \
    --history.created_by "mmdebstrap --variant=$BASE_VARIANT $BASE_SUITE ${BASE_PACKAGES[*]}" \
    --history.comment "Debian root filesystem ($(wc -l <"$BASE_TAR.packages") packages)" "$BASE_TAR"
  mv "$BASE_OCI.tmp" "$BASE_OCI"
fi

assemble() { # $1: the layout directory to write
  local layout=$1 image="$1:$TAG"
  mkdir "$layout"
  cp "$BASE_OCI/index.json" "$BASE_OCI/oci-layout" "$layout/"
  cp -al "$BASE_OCI/blobs" "$layout/blobs"
  umoci raw add-layer --image "$layout:base" --tag "$TAG" --history.created "$CREATED" \
    --history.created_by "pip install kubepam==$VERSION into /opt/kubepam" "$APP_TAR"
  umoci rm --image "$layout:base"
  umoci config --image "$image" --created "$CREATED" --history.created "$CREATED" \
    --history.created_by "umoci config" --author "kubepam" --architecture amd64 --os linux \
    --config.user 65532:65532 --config.entrypoint kubepam --config.cmd run --config.workingdir / \
    --config.env PATH=/opt/kubepam/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env LANG=C.UTF-8 --config.env PYTHONUNBUFFERED=1 --config.env PYTHONDONTWRITEBYTECODE=1 \
    --config.label org.opencontainers.image.title=kubepam \
    --config.label "org.opencontainers.image.description=kubepam operator and broker (kubepam run)" \
    --config.label org.opencontainers.image.source=https://github.com/kubepam/kubepam \
    --config.label "org.opencontainers.image.version=$VERSION" \
    --config.label "org.opencontainers.image.revision=$REVISION" \
    --config.label "org.opencontainers.image.created=$CREATED" \
    --config.label org.opencontainers.image.licenses=Apache-2.0
  umoci gc --layout "$layout"
}

digest_of() { # the manifest digest of the one image in layout $1
  python -c 'import json, sys
(entry,) = json.load(open(sys.argv[1] + "/index.json"))["manifests"]
print(entry["digest"])' "$1"
}

assemble "$WORK/oci"
DIGEST=$(digest_of "$WORK/oci")
rm -rf "$OUT.old"
[[ -e $OUT ]] && mv "$OUT" "$OUT.old"
mv "$WORK/oci" "$OUT"
rm -rf "$OUT.old"
t_total=$((SECONDS - t0))
if ((!NO_CACHE)); then # keep only what this recipe uses; builds killed long ago leave work.* behind
  for old in "$IMAGE_CACHE"/{base,deps,wheels,buildenv}-*; do
    case $old in
      "$BASE_TAR" | "$BASE_TAR".* | "$BASE_ROOTFS" | "$BASE_OCI" | "$DEPS" | "$WHEELS" | "$BUILDENV") ;;
      *) rm -rf "$old" ;;
    esac
  done
  find "$IMAGE_CACHE" -maxdepth 1 -name 'work.*' -mmin +240 -exec rm -rf {} + 2>/dev/null || true
fi

sizes=$(python - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
layout = Path(sys.argv[1])
blob = lambda d: layout / "blobs" / d.replace(":", "/", 1)
(entry,) = json.loads((layout / "index.json").read_text())["manifests"]
manifest = json.loads(blob(entry["digest"]).read_text())
packed = sum(layer["size"] for layer in manifest["layers"]) + manifest["config"]["size"] + entry["size"]
layers = " + ".join(f"{layer['size'] / 2**20:.1f}" for layer in manifest["layers"])
print(f"{packed / 2**20:.1f} MiB compressed (layers {layers} MiB)")
EOF
)
unpacked=$(($(stat -c %s "$BASE_TAR") + $(stat -c %s "$APP_TAR")))
echo "built in ${t_total}s (Debian layer ${t_base}s, app layer ${t_app}s)" >&2

echo "oci:$OUT:$TAG"
echo "digest $DIGEST"
echo "size $sizes, $((unpacked / 2**20)) MiB unpacked"

if ((CHECK)); then
  echo "building again to compare ..." >&2
  second=$(mktemp -d "$WORK/again.XXXXXX")
  args=(--out "$second/oci" --tag "$TAG")
  ((NO_CACHE)) && args+=(--no-cache)
  flock -u 9
  KUBEPAM_IMAGE_SRC="$WORK/src-pristine" KUBEPAM_IMAGE_REVISION=$REVISION \
    bash "$0" "${args[@]}" >"$second/log" 2>&1 || { cat "$second/log" >&2; exit 1; }
  AGAIN=$(digest_of "$second/oci")
  if [[ $AGAIN != "$DIGEST" ]]; then
    echo "NOT reproducible: $DIGEST, then $AGAIN"
    exit 1
  fi
  echo "reproducible: the second build gave $AGAIN too"
fi
