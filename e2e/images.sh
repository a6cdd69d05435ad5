#!/usr/bin/env bash
# Build the ktx images FROM scratch without a Docker engine (buildah, vfs storage), as static
# binaries run by user 65532, write them as oci-archives and import them into the e2e cluster.
#
#   e2e/images.sh                      all images; load them if the e2e cluster is up
#   e2e/images.sh ktx-testbackend busybox
#   e2e/images.sh ktx                  the ktx CLI image (janitor)
#   e2e/images.sh --no-load ...        only build the archives
#   e2e/images.sh --push REGISTRY/PREFIX [--insecure] [IMAGE...]
#                                      also push them as REGISTRY/PREFIX/NAME:TAG (default images:
#                                      ktx-router ktx-shadow ktx); log in first with `buildah login
#                                      REGISTRY`; --insecure: plain HTTP / unverified TLS
#
# Images: ktx.local/ktx-router:TAG, ktx.local/ktx-shadow:TAG, ktx.local/ktx-testbackend:TAG and
# ktx.local/ktx:TAG (the CLI; the chart's janitor runs `ktx janitor`), entrypoint /NAME; and
# ktx.local/busybox:TAG (Debian's busybox-static, for probes from pods).
# TAG is $KTX_IMAGE_TAG (default dev). Archives go to $KTX_CACHE/images (default ~/.cache/ktx).
# The same images for a Docker engine: e2e/Dockerfile (docker build -f e2e/Dockerfile --target NAME .)
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${KTX_CACHE:-$HOME/.cache/ktx}
TAG=${KTX_IMAGE_TAG:-dev}
OUT=${KTX_IMAGES_OUT:-$CACHE/images}
TARGET=x86_64-unknown-linux-gnu
RUST_IMAGES=(ktx-router ktx-shadow ktx-testbackend ktx)
ALL_IMAGES=("${RUST_IMAGES[@]}" busybox)

say() { printf '[ktx-images] %s\n' "$*" >&2; }
die() { printf '[ktx-images] ERROR: %s\n' "$*" >&2; exit 1; }

load=auto
images=()
push=
tls_verify=true
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    a=${args[i]}
    case $a in
        --no-load) load=no ;;
        --load) load=yes ;;
        --push) ((i + 1 < ${#args[@]})) || die "--push needs REGISTRY/PREFIX"; push=${args[++i]} ;;
        --push=*) push=${a#--push=} ;;
        --insecure) tls_verify=false ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        ktx-router|ktx-shadow|ktx-testbackend|ktx|busybox) images+=("$a") ;;
        *) die "unknown image or option: $a (images: ${ALL_IMAGES[*]})" ;;
    esac
done
if [[ -n $push ]]; then
    push=${push%/}
    [[ $push =~ ^[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*$ ]] || die "--push $push is not REGISTRY[:PORT][/PREFIX]"
    ((${#images[@]})) || images=(ktx-router ktx-shadow ktx)
fi
((${#images[@]})) || images=("${ALL_IMAGES[@]}")

need=()
for p in buildah busybox-static libcap2-bin; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if ((${#need[@]})); then
    [[ $(id -u) == 0 ]] || die "missing Debian packages: ${need[*]} (run as root, or install them)"
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

buildah_() {
    mkdir -p "$CACHE/buildah/cni"
    [[ -f $CACHE/buildah/containers.conf ]] \
        || printf '[network]\nnetwork_config_dir = "%s"\n' "$CACHE/buildah/cni" >"$CACHE/buildah/containers.conf"
    CONTAINERS_CONF=$CACHE/buildah/containers.conf buildah --root "$CACHE/buildah/root" --runroot "$CACHE/buildah/runroot" --storage-driver vfs "$@"; }

# 1. static Rust binaries (glibc, crt-static: no musl target can be installed here)
crates=()
for i in "${images[@]}"; do
    [[ $i == ktx-* || $i == ktx ]] && crates+=(-p "$i")
done
if ((${#crates[@]})); then
    say "cargo build --release (static) ${crates[*]}"
    export CARGO_TARGET_DIR=$CACHE/target-static
    (cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --target "$TARGET" "${crates[@]}") \
        || die "cargo build failed"
fi

# 2. images
mkdir -p "$OUT"
archives=()
pushed=()
build_image() {  # NAME SRC_DIR ENTRYPOINT_JSON
    local name=$1 src=$2 entry=$3 ref="ktx.local/$1:$TAG" c
    c=$(buildah_ from scratch)
    buildah_ copy "$c" "$src" / >/dev/null
    buildah_ config --entrypoint "$entry" --cmd '[]' --user 65532:65532 --workingdir / \
        --env PATH=/bin --label org.opencontainers.image.title="$name" \
        --label org.opencontainers.image.source="ktx e2e/images.sh" "$c"
    buildah_ commit -q --rm "$c" "$ref" >/dev/null
    rm -f "$OUT/$name.oci.tar"
    buildah_ push -q "$ref" "oci-archive:$OUT/$name.oci.tar:$ref"
    if [[ -n $push ]]; then
        buildah_ push -q --tls-verify="$tls_verify" "$ref" "docker://$push/$name:$TAG" \
            || die "pushing $push/$name:$TAG failed (buildah login ${push%%/*}?)"
        pushed+=("$push/$name:$TAG")
        say "pushed $push/$name:$TAG"
    fi
    buildah_ rmi -f "$ref" >/dev/null 2>&1 || true
    archives+=("$OUT/$name.oci.tar")
    say "built $ref -> $OUT/$name.oci.tar"
}

# Whether the layer holding /FILE in oci-archive ARCHIVE keeps its security.capability xattr.
has_file_capability() {  # ARCHIVE FILE
    python3 - "$1" "$2" <<'PY'
import io, sys, tarfile
outer = tarfile.open(sys.argv[1])
for m in outer.getmembers():
    if not (m.isfile() and m.name.startswith("blobs/")):
        continue
    try:
        layer = tarfile.open(fileobj=io.BytesIO(outer.extractfile(m).read()))
        entries = layer.getmembers()
    except (tarfile.ReadError, EOFError, OSError):
        continue
    for e in entries:
        if e.name.lstrip("./") == sys.argv[2] and "SCHILY.xattr.security.capability" in e.pax_headers:
            sys.exit(0)
sys.exit(1)
PY
}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
for i in "${images[@]}"; do
    rm -rf "${stage:?}/$i" && mkdir -p "$stage/$i"
    if [[ $i == busybox ]]; then
        mkdir -p "$stage/$i/bin" "$stage/$i/tmp"
        chmod 1777 "$stage/$i/tmp"
        install -m 0755 /bin/busybox "$stage/$i/bin/busybox"
        for applet in $(/bin/busybox --list); do
            [[ $applet == busybox ]] || ln -s busybox "$stage/$i/bin/$applet"
        done
        build_image busybox "$stage/$i" '["/bin/sh"]'
    else
        bin=$CACHE/target-static/$TARGET/release/$i
        [[ -x $bin ]] || die "no binary $bin"
        if ldd "$bin" 2>&1 | grep -q '=>'; then die "$bin is not static: $(ldd "$bin" 2>&1 | tr '\n' ' ')"; fi
        install -m 0755 "$bin" "$stage/$i/$i"
        # the release profile keeps line tables for backtraces; the image does not need them
        if command -v strip >/dev/null; then strip --strip-debug "$stage/$i/$i"; fi
        if [[ $i == ktx-router || $i == ktx-shadow ]]; then
            # They listen on a Service's target ports, some below 1024, as user 65532 with every
            # capability dropped but NET_BIND_SERVICE (Pod Security "restricted"): the binary
            # carries that one as a file capability (after strip, which would drop it). A container
            # that drops it too cannot exec the binary ("operation not permitted"): ktx's pods
            # always add NET_BIND_SERVICE.
            setcap cap_net_bind_service=+ep "$stage/$i/$i" || die "setcap on $i failed"
        fi
        build_image "$i" "$stage/$i" "[\"/$i\"]"
        if [[ $i == ktx-router || $i == ktx-shadow ]]; then
            has_file_capability "$OUT/$i.oci.tar" "$i" \
                || die "$i lost its file capability on the way into $OUT/$i.oci.tar"
            say "$i carries cap_net_bind_service=+ep in the image"
        fi
    fi
done

if ((${#pushed[@]})); then
    say "set them once: ktx config set routerImage $push/ktx-router:$TAG; ktx config set shadowImage $push/ktx-shadow:$TAG (or the chart's defaults)"
fi

# 3. into the cluster
cluster=$ROOT/e2e/cluster
if [[ $load == yes ]] || { [[ $load == auto ]] && "$cluster" status >/dev/null 2>&1; }; then
    say "loading into the e2e cluster"
    "$cluster" load "${archives[@]}"
else
    say "not loaded (cluster not up); later: e2e/cluster load ${archives[*]}"
fi
