#!/usr/bin/env bash
# Bring up a Docker engine and the registry-free test image gpuq's Docker
# tests use, on a Debian host with no GPU (CI runners, dev boxes).
#
# Idempotent, run as root:
#   1. if `docker info` already answers, keep that engine;
#   2. else install docker.io (only if dockerd is missing) and start
#      dockerd with vfs storage and no iptables/bridge (works inside
#      unprivileged CI containers; containers run with --network none);
#   3. build gpuq-test-busybox:latest with `docker import` from a rootfs
#      holding Debian's static busybox, if the image is missing.
# Exits non-zero with a one-line reason on any failure.
set -euo pipefail

IMAGE="${GPUQ_TEST_IMAGE:-gpuq-test-busybox:latest}"
DOCKERD_LOG="${GPUQ_DOCKERD_LOG:-/tmp/dockerd.log}"
WAIT_S="${GPUQ_DOCKERD_WAIT_S:-60}"
# Applets the tests and benchmarks call; docker-import images have no CMD,
# so every test passes its command explicitly.
APPLETS="sh sleep cat echo env dd head tail true false ls mkdir rm kill ps id yes wc grep printf seq"

die() { echo "docker-setup: $*" >&2; exit 1; }
log() { echo "docker-setup: $*"; }

engine_up() { docker info >/dev/null 2>&1; }

apt_install() {
    [ "$(id -u)" = 0 ] || die "must run as root to install $* (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed"
}

ensure_packages() {
    local need=()
    command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
    command -v docker >/dev/null 2>&1 || need+=(docker.io)
    [ -x /bin/busybox ] || need+=(busybox-static)
    if [ "${#need[@]}" -gt 0 ]; then
        # dedupe (docker.io may be listed twice)
        mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
        log "installing ${need[*]}"
        apt_install "${need[@]}"
    fi
}

start_engine() {
    if engine_up; then
        log "Docker engine already running"
        return
    fi
    [ "$(id -u)" = 0 ] || die "no Docker engine answers and starting dockerd needs root"
    command -v dockerd >/dev/null 2>&1 || die "dockerd not found after install"
    log "starting dockerd (log: $DOCKERD_LOG)"
    nohup dockerd --storage-driver=vfs --iptables=false --bridge=none \
        >"$DOCKERD_LOG" 2>&1 </dev/null &
    local deadline=$((SECONDS + WAIT_S))
    until engine_up; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            die "dockerd did not answer within ${WAIT_S}s (see $DOCKERD_LOG)"
        fi
        sleep 1
    done
    log "Docker engine up"
}

ensure_busybox() {
    [ -x /bin/busybox ] || apt_install busybox-static
    # The dynamic `busybox` package also installs /bin/busybox; an imported
    # image has no libc, so only the static build runs in it.
    if command -v file >/dev/null 2>&1 && ! file -L /bin/busybox | grep -q 'statically linked'; then
        apt_install busybox-static
    fi
}

build_image() {
    if docker image inspect "$IMAGE" >/dev/null 2>&1; then
        log "image $IMAGE present"
        return
    fi
    ensure_busybox
    ROOTFS="$(mktemp -d)"
    trap 'rm -rf "$ROOTFS"' EXIT
    local rootfs="$ROOTFS"
    mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/etc"
    cp /bin/busybox "$rootfs/bin/busybox"
    for applet in $APPLETS; do
        ln -s busybox "$rootfs/bin/$applet"
    done
    chmod 1777 "$rootfs/tmp"
    echo "root:x:0:0:root:/:/bin/sh" >"$rootfs/etc/passwd"
    echo "nobody:x:65534:65534:nobody:/:/bin/sh" >>"$rootfs/etc/passwd"
    echo "root:x:0:" >"$rootfs/etc/group"
    echo "nogroup:x:65534:" >>"$rootfs/etc/group"
    log "importing $IMAGE from a busybox-static rootfs"
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/bin' \
        - "$IMAGE" >/dev/null || die "docker import of $IMAGE failed"
    docker run --rm --network none "$IMAGE" /bin/sh -c 'echo ok' | grep -q ok \
        || die "smoke run of $IMAGE failed"
    log "image $IMAGE built"
}

main() {
    if ! engine_up; then
        ensure_packages
        start_engine
    else
        log "Docker engine already running"
    fi
    build_image
}

main "$@"
