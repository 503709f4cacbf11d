#!/usr/bin/env bash
# Installs dsv4 to a temporary prefix, then builds examples/consumer against it twice:
# with CMake's find_package and with pkg-config; both must run and agree. Then builds the
# custom-bundle example against it (dsv4::cpu_kernels compiled from the installed sources) and runs it,
# and, where nvcc is, the CUDA consumer (dsv4::cuda compiled from the installed sources).
set -euo pipefail
src=$1 model=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake -S "$src" -B "$work/build" -G Ninja -DDSV4_BUILD_TESTS=OFF -DDSV4_BUILD_TOOLS=OFF -DDSV4_WITH_CUDA=OFF \
  -DCMAKE_INSTALL_PREFIX="$work/prefix" >/dev/null
cmake --build "$work/build" >/dev/null
cmake --install "$work/build" >/dev/null
cmake -S "$src/examples/consumer" -B "$work/consumer" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/consumer" >/dev/null
a=$("$work/consumer/consumer" "$model" 6)
PKG_CONFIG_PATH="$work/prefix/share/pkgconfig" \
  c++ -O1 "$src/examples/consumer/main.cpp" $(PKG_CONFIG_PATH="$work/prefix/share/pkgconfig" pkg-config --cflags --libs dsv4) \
  -o "$work/consumer_pc"
b=$("$work/consumer_pc" "$model" 6)
echo "find_package: $a"
echo "pkg-config:   $b"
[[ -n "$a" && "$a" == "$b" ]]
cmake -S "$src/examples/custom_bundle" -B "$work/custom_bundle" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/custom_bundle" >/dev/null
"$work/custom_bundle/custom_bundle" "$model" 8 | tee "$work/cb.txt"
grep -q "top-1 agreement" "$work/cb.txt"
nvcc=$(command -v nvcc || true)
[[ -z $nvcc && -x /usr/local/cuda/bin/nvcc ]] && nvcc=/usr/local/cuda/bin/nvcc
if [[ -n $nvcc ]]; then
  cmake -S "$src/examples/consumer_cuda" -B "$work/consumer_cuda" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" \
    -DCMAKE_CUDA_COMPILER="$nvcc" >/dev/null
  cmake --build "$work/consumer_cuda" >/dev/null
  "$work/consumer_cuda/consumer_cuda" "$model"
fi
# The package holds no compiled library: the kernels come as sources.
if find "$work/prefix" -name '*.a' -o -name '*.so' | grep -q .; then
  echo "the installed package contains binaries"; exit 1
fi
