#!/usr/bin/env bash
# Builds llama.cpp's llama-server and copies its HF->GGUF converter into $SELFDEBUG_CACHE/llama.cpp
# (default ~/.cache/selfdebug/llama.cpp), for backend=llamacpp (selfdebug/generation/llamacpp.py).
# The source is the llama.cpp that llama-cpp-python vendors in its PyPI sdist (a pinned version,
# from the package registry: no git, no network beyond PyPI). Needs cmake and a C++ compiler
# (apt-get install cmake g++). About 5 minutes on 2 cores; a rerun with the same version is a no-op.
#   usage: scripts/install_llamacpp.sh [PYTHON]   (PYTHON: the venv's python, for pip download)
set -euo pipefail
VERSION=0.3.36  # llama-cpp-python, whose sdist vendors llama.cpp
PYTHON=${1:-python3}
DEST=${SELFDEBUG_CACHE:-$HOME/.cache/selfdebug}/llama.cpp
if [ -x "$DEST/bin/llama-server" ] && [ "$(cat "$DEST/VERSION" 2>/dev/null)" = "$VERSION" ]; then
  echo "llama.cpp $VERSION already installed in $DEST"; exit 0
fi
command -v cmake >/dev/null && command -v c++ >/dev/null || {
  echo "scripts/install_llamacpp.sh needs cmake and a C++ compiler: apt-get install cmake g++" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PYTHON" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$WORK"
tar -xzf "$WORK"/llama_cpp_python-$VERSION.tar.gz -C "$WORK"
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
# Static, CPU only, tuned to this machine's CPU (GGML_NATIVE); only the server target.
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$WORK/build" --target llama-server -j "$(nproc)" >/dev/null
rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp/bin"
cp "$WORK/build/bin/llama-server" "$DEST.tmp/bin/"
cp -r "$SRC/convert_hf_to_gguf.py" "$SRC/conversion" "$SRC/gguf-py" "$SRC/LICENSE" "$DEST.tmp/"
echo "$VERSION" > "$DEST.tmp/VERSION"
rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
echo "llama.cpp $VERSION installed in $DEST"
