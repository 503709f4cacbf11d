#!/usr/bin/env bash
# The whole test suite: release build + tests, the same under AddressSanitizer/UBSan,
# and the fuzzers for a bounded time (DSV4_FUZZ_SECONDS each, default 60).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

echo "== release build and tests"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DDSV4_BUILD_BENCH=ON >/dev/null
cmake --build build
ctest --test-dir build --output-on-failure -j "$jobs"

echo "== tests under AddressSanitizer + UndefinedBehaviorSanitizer"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS=-O1 \
  -DDSV4_SANITIZE=address,undefined >/dev/null
cmake --build build-asan
ctest --test-dir build-asan --output-on-failure -j "$jobs" -E package_consumer

echo "== fuzzers (clang, libFuzzer)"
CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDSV4_BUILD_FUZZ=ON \
  -DDSV4_BUILD_TESTS=OFF -DDSV4_BUILD_TOOLS=OFF >/dev/null
cmake --build build-fuzz
fuzz/run.sh build-fuzz "${DSV4_FUZZ_SECONDS:-60}"
echo "== all tests passed"
