#!/usr/bin/env bash
# The long-context benchmark: table, CSV and plot in bench/results/ (needs gnuplot for the PNG:
# apt-get install gnuplot-nox). Run from a build with -DDSV4_BUILD_BENCH=ON:
#   bench/long_context.sh [BUILD_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
out=$here/results
mkdir -p "$out"
"$build/bench/bench_long_context" --csv "$out/long_context.csv" | tee "$out/long_context.txt"
if command -v gnuplot >/dev/null; then
  gnuplot -e "csv='$out/long_context.csv'; png='$out/long_context.png'" "$here/plot_long_context.gp"
  echo "plot: $out/long_context.png"
else
  echo "gnuplot not found: no plot (apt-get install gnuplot-nox)" >&2
fi
