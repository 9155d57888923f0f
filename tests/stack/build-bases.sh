#!/usr/bin/env bash
# Builds, with no registry, the base images the stack test builds the kit's own images on:
#   llmkit-test/python   Debian bookworm (debootstrap) with a venv holding torch (CPU), the service's pinned
#                        requirements and Locust: the stand-in for pytorch/pytorch (fastapi-llama's base), and the
#                        image of the Prometheus and DCGM stand-ins (Debian's prometheus is in it).
#   llmkit-test/locust   the same with a `locust` user and entrypoint: the stand-in for locustio/locust.
# Python packages come from a wheelhouse downloaded on the host (pip inside a container cannot verify TLS here);
# the wheelhouse stays in the image with PIP_NO_INDEX set, so the kit's Dockerfiles run their own `pip install`
# unchanged and offline. Usage: build-bases.sh [CACHE_DIR]   (default .cache/stack; reruns reuse it)
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE=${1:-.cache/stack}
PIP=${PIP:-.venv/bin/pip}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$CACHE"
CACHE=$(realpath "$CACHE")

# What the images install: torch as the kit's venv pins it (its CPU build), the service's requirements, the Locust
# image's own pins, and the build backend `pip install .` needs.
packages=(torch==2.13.0 setuptools wheel locust==2.47.0 numpy==2.4.6 prometheus-client==0.26.0)
stamp=$(cat services/fastapi_llama/requirements.txt tests/stack/build-bases.sh | sha256sum | cut -c1-16)

if docker image inspect "llmkit-test/locust:$stamp" >/dev/null 2>&1; then
    echo "build-bases: llmkit-test/python and llmkit-test/locust ($stamp) already built"
    exit 0
fi

# Earlier builds' wheelhouses and any half-built image root (an interrupted run) go.
find "$CACHE" -maxdepth 1 \( -name 'wheels-*' -o -name 'image-*' \) ! -name "wheels-$stamp" -exec rm -rf {} +

wheels="$CACHE/wheels-$stamp"
if [ ! -f "$wheels/.done" ]; then
    rm -rf "$wheels"
    "$PIP" download -q --only-binary :all: -d "$wheels" "${packages[@]}" -r services/fastapi_llama/requirements.txt \
        2> >(grep -v 'is ignored: it is neither' >&2)
    touch "$wheels/.done"
fi

rootfs="$CACHE/rootfs-$SUITE"
if [ ! -f "$rootfs/.done" ]; then
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,wget,prometheus "$SUITE" "$rootfs" "$MIRROR" \
        >"$CACHE/debootstrap.log" 2>&1 || { tail -20 "$CACHE/debootstrap.log"; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    touch "$rootfs/.done"
fi

# The venv and wheelhouse go into a copy, so that the Debian rootfs is reused when only the packages change.
image_root="$CACHE/image-$stamp"
rm -rf "$image_root"
cp -a "$rootfs" "$image_root"
rm -f "$image_root/.done"
mkdir -p "$image_root/opt/wheels"
find "$wheels" -name '*.whl' ! -name 'torch-*' -exec cp {} "$image_root/opt/wheels/" \;
cp "$wheels"/torch-*.whl services/fastapi_llama/requirements.txt "$image_root/tmp/"
chroot "$image_root" /usr/bin/python3 -m venv /opt/venv
chroot "$image_root" /opt/venv/bin/pip install -q --no-index --find-links /opt/wheels --find-links /tmp \
    "${packages[@]}" -r /tmp/requirements.txt
rm -f "$image_root"/tmp/*.whl "$image_root/tmp/requirements.txt"
find "$image_root/opt/venv" -name __pycache__ -prune -exec rm -rf {} +

tar -C "$image_root" -c . | docker import \
    --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV PIP_NO_INDEX=1 PIP_FIND_LINKS=/opt/wheels PIP_DISABLE_PIP_VERSION_CHECK=1' \
    --change 'CMD ["python3"]' \
    - "llmkit-test/python:$stamp" >/dev/null
rm -rf "$image_root"
docker tag "llmkit-test/python:$stamp" llmkit-test/python:latest

docker build -q -t "llmkit-test/locust:$stamp" -t llmkit-test/locust:latest - >/dev/null <<DOCKERFILE
FROM llmkit-test/python:$stamp
RUN useradd --create-home locust
USER locust
WORKDIR /home/locust
ENTRYPOINT ["locust"]
DOCKERFILE
echo "build-bases: built llmkit-test/python and llmkit-test/locust ($stamp)"
