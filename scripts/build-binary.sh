#!/bin/sh
# The one recipe for the release binary: the Dockerfile runs it, and so does
# CI (TestReleaseBuildRecipe), so the image's build flags cannot rot unseen.
#
# Usage: scripts/build-binary.sh OUTPUT [VERSION]
#
# cgo stays on: NVML (go-nvml) is loaded with dlopen at run time, and lazy
# binding lets the binary start on drivers that lack newer NVML symbols (with
# immediate binding a binary died at start on an undefined NVML symbol).
set -eu
out=${1:?usage: scripts/build-binary.sh OUTPUT [VERSION]}
version=${2:-dev}
CGO_ENABLED=1 exec go build -trimpath \
  -ldflags "-s -w -X main.version=${version} -extldflags=-Wl,-z,lazy" \
  -o "$out" ./cmd/auditproxy
