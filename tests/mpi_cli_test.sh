#!/usr/bin/env bash
# The dsv4 tool under mpirun: same answers as one process, printed once; a mismatched or missing
# checkpoint on one rank and a rank that dies end the run with a clear error, never a hang.
# usage: mpi_cli_test.sh MPIEXEC DSV4 TINY_DIR TEST_MPI
set -uo pipefail
mpiexec=$1 dsv4=$2 tiny=$3 test_mpi=$4
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAILED: $*"; fails=$((fails + 1)); }
mpi() { timeout 120 "$mpiexec" --oversubscribe "$@"; }

gen=(generate --model "$tiny/orig" --prompt-ids 5,17,42 --max-new-tokens 8 --greedy)
"$dsv4" "${gen[@]}" >"$tmp/one.txt" || fail "one-process generate"
for np in 2 3; do
  for mode in reference fast; do
    mpi -np $np "$dsv4" "${gen[@]}" --mode $mode >"$tmp/np.txt" 2>"$tmp/err.txt" || fail "generate -np $np --mode $mode: $(cat "$tmp/err.txt")"
    "$dsv4" "${gen[@]}" --mode $mode >"$tmp/one_$mode.txt"
    cmp -s "$tmp/np.txt" "$tmp/one_$mode.txt" || fail "generate -np $np --mode $mode printed '$(cat "$tmp/np.txt")', one process '$(cat "$tmp/one_$mode.txt")'"
  done
done

# Tensor parallelism (heads and the shared expert split too) over 2 ranks: the same tokens.
for mode in reference fast; do
  mpi -np 2 "$dsv4" "${gen[@]}" --mode $mode --parallel tensor >"$tmp/np.txt" 2>"$tmp/err.txt" ||
    fail "generate -np 2 --parallel tensor --mode $mode: $(cat "$tmp/err.txt")"
  cmp -s "$tmp/np.txt" "$tmp/one_$mode.txt" || fail "generate -np 2 --parallel tensor --mode $mode printed '$(cat "$tmp/np.txt")', one process '$(cat "$tmp/one_$mode.txt")'"
done

expect_error() {  # expect_error NAME PATTERN MIN_RANKS_REPORTING -- mpirun args...
  local name=$1 pattern=$2 min=$3
  shift 4
  local start=$SECONDS
  mpi "$@" >"$tmp/out.txt" 2>"$tmp/err.txt"
  local rc=$?
  local took=$((SECONDS - start))
  [[ $rc -ne 0 ]] || fail "$name: exit code 0"
  [[ $rc -ne 124 ]] || fail "$name: hung (killed by timeout after ${took}s)"
  local n
  n=$(grep -c -- "$pattern" "$tmp/err.txt")
  [[ $n -ge $min ]] || fail "$name: expected '$pattern' from $min rank(s), got $n; stderr: $(head -c 2000 "$tmp/err.txt")"
  echo "ok: $name (exit $rc after ${took}s)"
}
expect_error "mismatched checkpoints" "differs between ranks" 2 -- \
  -np 1 "$dsv4" info --model "$tiny/orig" : -np 1 "$dsv4" info --model "$tiny/hf"
expect_error "missing checkpoint on one rank" "failed on rank 1" 2 -- \
  -np 1 "$dsv4" info --model "$tiny/orig" : -np 1 "$dsv4" info --model "$tmp/nonexistent"
expect_error "more ranks than experts" "at least one routed expert per rank" 9 -- \
  -np 9 "$dsv4" info --model "$tiny/orig"
expect_error "heads that do not split over the ranks" "does not split evenly over 3 ranks" 3 -- \
  -np 3 "$dsv4" info --model "$tiny/orig" --parallel tensor
expect_error "ranks that disagree on the parallelism" "parallelism (expert or tensor) differs between ranks" 2 -- \
  -np 1 "$dsv4" info --model "$tiny/orig" --parallel tensor : -np 1 "$dsv4" info --model "$tiny/orig"
"$dsv4" info --model "$tiny/orig" --parallel heads 2>"$tmp/err.txt" && fail "--parallel heads accepted"
grep -q "not one of expert, tensor" "$tmp/err.txt" || fail "--parallel heads: $(cat "$tmp/err.txt")"
DSV4_COMM_TIMEOUT_S=20 expect_error "a rank dies" "dsv4" 1 -- \
  -np 1 "$dsv4" "${gen[@]}" : -np 1 "$test_mpi" --die-after-init

if [[ $fails -ne 0 ]]; then
  echo "$fails check(s) failed"
  exit 1
fi
echo "mpi cli: all checks passed"
