#!/usr/bin/env bash
# Runs every dsv4 fuzzer for SECONDS on a scratch copy of its seed corpus.
#   fuzz/run.sh BUILD_DIR SECONDS
# BUILD_DIR is a build configured with -DDSV4_BUILD_FUZZ=ON (clang). Fails if any fuzzer fails;
# crash inputs are kept in BUILD_DIR/fuzz/artifacts/<fuzzer>/.
set -u
if [ $# -ne 2 ]; then
  echo "usage: $0 BUILD_DIR SECONDS" >&2
  exit 2
fi
build=$(cd "$1" && pwd) || exit 2
seconds=$2
here=$(cd "$(dirname "$0")" && pwd)
status=0
for name in safetensors config tokenizer cache_file; do
  exe="$build/fuzz/fuzz_$name"
  if [ ! -x "$exe" ]; then
    echo "run.sh: $exe not found; build with -DDSV4_BUILD_FUZZ=ON" >&2
    status=1
    continue
  fi
  work=$(mktemp -d "${TMPDIR:-/tmp}/dsv4_fuzz_$name.XXXXXX")
  cp -R "$here/corpus/$name/." "$work/"
  artifacts="$build/fuzz/artifacts/$name"
  mkdir -p "$artifacts"
  dict=()
  [ -f "$here/$name.dict" ] && dict=(-dict="$here/$name.dict")
  echo "== fuzz_$name for ${seconds}s (corpus copy in $work)"
  if "$exe" "$work" "${dict[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$artifacts/" -print_final_stats=1; then
    echo "== fuzz_$name: ok"
  else
    echo "== fuzz_$name: FAILED (inputs in $artifacts)" >&2
    status=1
  fi
  rm -rf "$work"
done
exit $status
