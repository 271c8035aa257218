#!/usr/bin/env bash
# The ONNX Runtime C API header the runner compiles against, cached outside the repo.
#
# No PyPI package ships ORT's headers and no ORT sdist is served, so they come from the
# npm package com.github.asus4.onnxruntime (MIT, ONNX Runtime's own headers, API 29, in
# its iOS framework). The library itself is not fetched: it is the libonnxruntime.so.1
# inside the onnxruntime wheel (the host's venv for x86_64, the arm64 root's for aarch64),
# the very build the Python runtime uses. Prints the include folder.
set -euo pipefail
CACHE=${EDGEOPT_CACHE:-$HOME/.cache/edgeopt}
PKG=com.github.asus4.onnxruntime@0.4.9
DEST=$CACHE/ort-headers-api29
mkdir -p "$CACHE"
if [ ! -f "$DEST/onnxruntime_c_api.h" ]; then
  command -v npm >/dev/null || { echo "fetch_deps.sh: npm not found: apt-get install npm" >&2; exit 1; }
  tmp=$(mktemp -d "$CACHE/.ort-headers.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack "$PKG" --silent >/dev/null)
  tar xzf "$tmp"/*.tgz -C "$tmp" --wildcards \
    '*/ios-arm64_x86_64-simulator/onnxruntime.framework/Headers/*'
  mkdir -p "$tmp/out"
  cp "$tmp"/package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64_x86_64-simulator/onnxruntime.framework/Headers/*.h "$tmp/out/"
  rm -rf "$DEST" && mv "$tmp/out" "$DEST"
fi
echo "$DEST"
