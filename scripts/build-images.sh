#!/usr/bin/env bash
# Builds the docker-compose cluster's images without any registry:
#   1. static binaries into dist/ (CGO_ENABLED=0, -trimpath):
#      brokerd, loadgen, ringer-push, ringer-webhook, ringer-sink, healthcheck, and
#      nats-server from the nats-server/v2 module version pinned in go.mod;
#   2. FROM-scratch images ringer/nats-server:dev, ringer/brokerd:dev,
#      ringer/ringer-push:dev (with ringer-webhook and ringer-sink) and ringer/loadgen:dev
#      (deploy/*.Dockerfile), each built from a staged
#      context dist/ctx/<image>/ holding only the files it copies.
# If ./cmd/loadgen does not compile, the other images are still built and the
# script exits 1 at the end, saying so.
# Usage: scripts/build-images.sh [--no-docker]   (--no-docker: binaries only)
set -euo pipefail

cd "$(dirname "$0")/.."
TAG=${RINGER_IMAGE_TAG:-dev}
DOCKER=1
if [[ ${1:-} == --no-docker ]]; then DOCKER=0; fi

log() { printf '==> %s\n' "$*" >&2; }

# Every binary says which Ringer it is (--version, brokerd's ringer_build_info).
BI=github.com/ringer-dev/ringer/internal/buildinfo
VERSION=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT=$(git rev-parse HEAD 2>/dev/null || true)
gobuild() { # gobuild OUTPUT PACKAGE
	CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X $BI.Version=$VERSION -X $BI.Commit=$COMMIT" -o "dist/$1" "$2"
}

mkdir -p dist
log "go build: healthcheck, brokerd, ringer-push, ringer-webhook, ringer-sink, nats-server (module version from go.mod)"
gobuild healthcheck ./cmd/healthcheck
gobuild brokerd ./cmd/brokerd
gobuild ringer-push ./cmd/ringer-push
gobuild ringer-webhook ./cmd/ringer-webhook
gobuild ringer-sink ./cmd/ringer-sink
gobuild nats-server github.com/nats-io/nats-server/v2
log "go build: loadgen"
LOADGEN=1
if ! gobuild loadgen ./cmd/loadgen; then
	LOADGEN=0
	rm -f dist/loadgen
fi
./dist/nats-server --version >&2

fail_if_no_loadgen() {
	if [[ $LOADGEN == 0 ]]; then
		echo "build-images.sh: FAILED: ./cmd/loadgen does not compile (see above); ringer/loadgen:$TAG was not built" >&2
		exit 1
	fi
}
if [[ $DOCKER == 0 ]]; then
	fail_if_no_loadgen
	exit 0
fi

# stage IMAGE FILE... : dist/ctx/IMAGE/ containing exactly the given dist/ files.
stage() {
	local dir=dist/ctx/$1
	shift
	rm -rf "$dir"
	mkdir -p "$dir"
	for f in "$@"; do cp "dist/$f" "$dir/"; done
	echo "$dir"
}

# BuildKit needs the buildx plugin; without it use the legacy builder, which
# is enough for these Dockerfiles.
if ! docker buildx version >/dev/null 2>&1; then export DOCKER_BUILDKIT=0; fi

ctx=$(stage nats-server nats-server healthcheck)
mkdir -p "$ctx/nats" "$ctx/data"
cp deploy/nats/*.conf "$ctx/nats/"
log "docker build ringer/nats-server:$TAG"
docker build -q -f deploy/nats-server.Dockerfile -t "ringer/nats-server:$TAG" "$ctx" >&2

ctx=$(stage brokerd brokerd healthcheck)
log "docker build ringer/brokerd:$TAG"
docker build -q -f deploy/brokerd.Dockerfile -t "ringer/brokerd:$TAG" "$ctx" >&2

ctx=$(stage ringer-push ringer-push ringer-webhook ringer-sink)
log "docker build ringer/ringer-push:$TAG"
docker build -q -f deploy/ringer-push.Dockerfile -t "ringer/ringer-push:$TAG" "$ctx" >&2

if [[ $LOADGEN == 1 ]]; then
	ctx=$(stage loadgen loadgen)
	log "docker build ringer/loadgen:$TAG"
	docker build -q -f deploy/loadgen.Dockerfile -t "ringer/loadgen:$TAG" "$ctx" >&2
fi

docker images --filter "reference=ringer/*:$TAG" >&2
fail_if_no_loadgen
