#!/usr/bin/env bash
# Fresh Debian 12 machine -> dependencies installed, dsv4 built, demo run on the bundled tiny model.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  g++ clang cmake ninja-build pkg-config libc6-dev \
  libeigen3-dev libxsimd-dev catch2 libbenchmark-dev libomp-dev nlohmann-json3-dev libpcre2-dev \
  libclang-rt-14-dev libopenmpi-dev openmpi-bin libcpp-httplib-dev curl gnuplot-nox >/dev/null
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
echo "== dsv4 info (tests/data/tiny/orig: a 6-layer DeepSeek-V4 with random weights, release formats)"
./build/dsv4 info --model tests/data/tiny/orig
echo "== dsv4 generate: greedy continuation of token ids 5,17,42"
./build/dsv4 generate --model tests/data/tiny/orig --prompt-ids 5,17,42 --max-new-tokens 16 --greedy
