#!/usr/bin/env bash
# Build, test and benchmark the CUDA backend on a GPU machine that has the CUDA toolkit but none of
# the Debian -dev packages (the lent H100): headers and a static PCRE2 come from $DEPS
# (include/{nlohmann,xsimd,catch2,pcre2.h}, lib/libpcre2-8.a, copied from a Debian machine).
#   DEPS=third_party_device/deps OUT=/tmp/out [BASE=DIR] scripts/cuda_device.sh [test|bench|all|gemv|profile|decode|prefill|split] [layers]
# gemv: only the GEMV (src/cuda/gemv.cu): its test, the bandwidth bench and the SASS of the
# tensor-core kernels, in about a minute. bench: also DSV4_CUDA_GEMV=legacy for the earlier kernels.
# profile: bench/cuda_decode_bench (median ms per decode step at batch 1, 8, 32), the
# DSV4_CUDA_PROFILE split of batch-1 decode, and every kernel of one replayed decode step at batch 1
# and 8 timed by Nsight Compute (bench/cuda_kernel_table.py: launches per step, per-kernel times).
# decode: the decode bench and dsv4 bench only. final: test, then profile. v3: test, then dsv4 bench of
# `dsv4 synth --preset v3 --layers N` (DeepSeek-V3 shapes). BASE=DIR builds the tree
# DIR too (e.g. `git archive main include src tools bench`) and runs the same benches on it,
# alternating, for before/after numbers from one run. PACK=1: everything in $OUT/results.tgz (the
# device tool brings back at most 8 files). For a short call: ROUNDS=N (N rounds of the decode bench
# per tree; with BASE the default is 2), NCU_BATCHES="8" (the batches whose replayed step Nsight Compute times;
# empty: none), NCU_TREES=new / PROFILE_TREES=new (only this tree's kernel table / profile split).
# Logs and JSON results go to $OUT. Plain compiler commands (no CMake): what CI builds with CMake is
# the same sources.
set -uo pipefail
what=${1:-all}
layers=${2:-4}
: "${DEPS:?set DEPS to the dependency prefix}" "${OUT:?set OUT to the results folder}"
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
cuda=$(dirname "$(dirname "$nvcc")")
b=/tmp/dsv4-cuda-build
mkdir -p "$b" "$OUT"
# At most 8 files come back from the device machine: PACK=1 packs everything into $OUT/results.tgz.
[[ -n ${PACK:-} ]] && trap '(cd "$OUT" && tar czf /tmp/results.tgz . && rm -rf ./* && mv /tmp/results.tgz .)' EXIT
nvidia-smi -L | tee "$OUT/device.txt"

flags=(-std=c++20 -O2 -fopenmp -march=native -Iinclude -I"$DEPS/include" -I"$cuda/include" -DDSV4_WITH_CUDA
       -DDSV4_TEST_DATA="\"$PWD/tests/data\"" -DDSV4_GOLDEN_ROOT="\"$PWD/tests/data\"")
libs=(-L"$cuda/lib64" -lcudart -lcublas "$DEPS/lib/libpcre2-8.a" -fopenmp -lpthread -ldl)

if [[ $what == gemv ]]; then
  echo "== build (gemv)" | tee "$OUT/build.log"
  nv=("$nvcc" -std=c++20 -O3 -arch=sm_90 --expt-relaxed-constexpr -Iinclude -I"$DEPS/include")
  "${nv[@]}" -Xptxas -v -c src/cuda/gemv.cu -o "$b/gemv.cu.o" >>"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
  "${nv[@]}" -c src/cuda/kernels.cu -o "$b/kernels.cu.o" >>"$OUT/build.log" 2>&1 &  # the router, argmax, grouping
  g++ "${flags[@]}" -c tests/test_cuda_gemv.cpp -o "$b/test_cuda_gemv.o" >>"$OUT/build.log" 2>&1 &
  "${nv[@]}" bench/cuda_gemv_bench.cu "$b/gemv.cu.o" -o "$b/cuda_gemv_bench" >>"$OUT/build.log" 2>&1 &
  wait
  g++ -o "$b/test_cuda_gemv" "$b/test_cuda_gemv.o" "$b/gemv.cu.o" "$b/kernels.cu.o" -L"$cuda/lib64" -lcudart >>"$OUT/build.log" 2>&1
  ls "$b/test_cuda_gemv" "$b/cuda_gemv_bench" >/dev/null || { tail -30 "$OUT/build.log"; exit 1; }
  [[ -n ${SASS:-} ]] && cuobjdump -sass "$b/gemv.cu.o" | awk '/Function : .*pgemv/{f=1} /Function : /&&!/pgemv/{f=0} f' > "$OUT/gemv_sass.txt" 2>&1
  status=0
  # Every tensor-core variant (DSV4_CUDA_GEMV_VARIANT) through the test and the bench.
  for v in ${VARIANTS:-0 1}; do
    echo "== variant $v" >> "$OUT/test_cuda_gemv.log"
    DSV4_CUDA_GEMV_VARIANT=$v "$b/test_cuda_gemv" >> "$OUT/test_cuda_gemv.log" 2>&1 || status=1
    DSV4_CUDA_GEMV_VARIANT=$v "$b/cuda_gemv_bench" > "$OUT/gemv_bench_v$v.txt" 2>&1 || status=1
    echo "variant $v: $(grep -c FAIL "$OUT/test_cuda_gemv.log") FAIL lines so far"
    sed -n '/^scheme/,$p' "$OUT/gemv_bench_v$v.txt" | awk -v v=$v 'NR==1 || ($2==16384 && ($4==1 || $4==2 || $4==8)) {print "v" v, $0}'
  done
  # NCU=1: the profiler's warp-state and pipe figures for one FP4 and one FP8 launch at batch 1.
  if [[ -n ${NCU:-} ]]; then
    ncu_bin=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    # The quick bench launches each kernel 103 times: FP4 first, then FP8.
    for skip in 0 103; do
      DSV4_GEMV_BENCH_QUICK=1 DSV4_CUDA_GEMV_VARIANT=${NCU_VARIANT:-0} timeout 120 "$ncu_bin" --clock-control none \
        -k regex:pgemv --launch-skip $skip -c 1 --section SpeedOfLight --section WarpStateStats --section SchedulerStats \
        --section ComputeWorkloadAnalysis --section InstructionStats --section MemoryWorkloadAnalysis --section Occupancy \
        "$b/cuda_gemv_bench" >> "$OUT/ncu.txt" 2>&1
    done
    grep -E "Stall|Issued|Eligible|Active Warps|Throughput|Pipe|Occupancy|Memory \[|DRAM|L1/TEX Hit|Duration" "$OUT/ncu.txt" | head -80
  fi
  exit $status
fi

# split: the expert-parallel GPU path only (issue 9): the CUDA component, test_cuda_split, test_cuda_model
# and the tool (with NCCL where this machine has it: $cuda or the nvidia-nccl Python wheel), then
# test_cuda_split (2 and 3 ranks as threads on this GPU), test_cuda_model's quick parts
# (MODEL_TAGS, default "[golden],[graphs],[greedy],[errors]") and the tool's --backend cuda check.
if [[ $what == split ]]; then
  echo "== build (split)" | tee "$OUT/build.log"
  nccl_inc= nccl_lib=
  if [[ -f $cuda/include/nccl.h ]] && ls "$cuda"/lib64/libnccl.so* >/dev/null 2>&1; then
    nccl_inc=$cuda/include nccl_lib=$(ls "$cuda"/lib64/libnccl.so* | head -1)
  else
    py_nccl=$(python3 -c 'import nvidia.nccl, os; print(list(nvidia.nccl.__path__)[0])' 2>/dev/null)
    [[ -n $py_nccl && -f $py_nccl/include/nccl.h ]] && nccl_inc=$py_nccl/include nccl_lib=$(ls "$py_nccl"/lib/libnccl.so* | head -1)
  fi
  sflags=("${flags[@]}") slibs=("${libs[@]}")
  # NCCL only if a program calling it compiles and links here (else the rest still builds).
  if [[ -n $nccl_lib ]] && ! printf '#include <nccl.h>\nint main() { int v = 0; return ncclGetVersion(&v); }\n' |
      g++ -x c++ - -x none -I"$cuda/include" -I"$nccl_inc" "$nccl_lib" -L"$cuda/lib64" -lcudart -o "$b/nccl_check" >>"$OUT/build.log" 2>&1; then
    echo "NCCL at $nccl_lib does not link: built without it" | tee -a "$OUT/build.log"; nccl_lib=
  fi
  if [[ -n $nccl_lib ]]; then
    echo "NCCL: $nccl_lib" | tee -a "$OUT/build.log"
    sflags+=(-DDSV4_WITH_NCCL -I"$nccl_inc") slibs+=("$nccl_lib" -Wl,-rpath,"$(dirname "$nccl_lib")")
  else
    echo "NCCL: not found (NcclCommunicator not built)" | tee -a "$OUT/build.log"
  fi
  objs=() cli=()
  for f in src/cuda/*.cu; do
    o=$b/$(basename "$f").o; objs+=("$o")
    "$nvcc" -std=c++20 -O3 -arch=sm_90 --expt-relaxed-constexpr -Xcompiler -Wall,-Wextra -Iinclude -I"$DEPS/include" \
      -c "$f" -o "$o" >>"$OUT/build.log" 2>&1 &
  done
  for f in src/cuda/*.cpp; do
    o=$b/$(basename "$f").o; objs+=("$o")
    g++ "${sflags[@]}" -Wall -Wextra -c "$f" -o "$o" >>"$OUT/build.log" 2>&1 &
  done
  for f in tools/dsv4.cpp tools/cli/cmd_*.cpp; do
    o=$b/cli_$(basename "$f").o; cli+=("$o")
    g++ "${sflags[@]}" -c "$f" -o "$o" >>"$OUT/build.log" 2>&1 &
  done
  for t in test_cuda_split test_cuda_model; do
    g++ "${sflags[@]}" -Wall -Wextra -c tests/$t.cpp -o "$b/$t.o" >>"$OUT/build.log" 2>&1 &
  done
  wait
  for t in test_cuda_split test_cuda_model; do
    g++ -o "$b/$t" "$b/$t.o" "${objs[@]}" "${slibs[@]}" >>"$OUT/build.log" 2>&1
  done
  g++ -o "$b/dsv4" "${cli[@]}" "${objs[@]}" "${slibs[@]}" >>"$OUT/build.log" 2>&1
  grep -E "warning|error" "$OUT/build.log" | grep -v "^nvcc warning" | head -30
  ls "$b/test_cuda_split" "$b/test_cuda_model" "$b/dsv4" >/dev/null || { tail -30 "$OUT/build.log"; exit 1; }
  echo "built"
  status=0
  # The two tests share the GPU at once (neither is timed): the model test in the background.
  timeout ${MODEL_TEST_TIMEOUT:-90} "$b/test_cuda_model" "${MODEL_TAGS:-[golden],[graphs],[greedy],[errors]}" -d yes \
    > "$OUT/test_cuda_model.log" 2>&1 &
  model_pid=$!
  timeout ${SPLIT_TIMEOUT:-150} "$b/test_cuda_split" -d yes > "$OUT/test_cuda_split.log" 2>&1 || status=1
  grep -E "^[0-9.]+ s: |passed|failed|FAILED|SKIP|split vs" "$OUT/test_cuda_split.log" | tail -40
  wait "$model_pid" || status=1
  grep -E "^[0-9.]+ s: |passed|failed|FAILED" "$OUT/test_cuda_model.log" | tail -12
  t=tests/data/tiny/hf
  g1=$("$b/dsv4" generate --model $t --prompt-ids 5,17,42 --max-new-tokens 12 --greedy --mode reference)
  g2=$("$b/dsv4" generate --backend cuda --model $t --prompt-ids 5,17,42 --max-new-tokens 12 --greedy --mode reference)
  echo "generate cpu: $g1 / cuda: $g2" | tee "$OUT/cli.log"
  [[ "$g1" == "$g2" ]] || status=1
  echo "split status $status"
  exit $status
fi

# build_tree SRC DIR: the CUDA component, the tool, the tests and the benches of the tree SRC into DIR
# (the decode bench always from this tree: it uses only the public API).
build_tree() {
  local src=$1 dir=$2 f o
  local fl=("${flags[@]/#-Iinclude/-I$src/include}")
  local objs=() cli=()
  mkdir -p "$dir"
  for f in "$src"/src/cuda/*.cu; do
    o=$dir/$(basename "$f").o; objs+=("$o")
    "$nvcc" -std=c++20 -O3 -arch=sm_90 --expt-relaxed-constexpr -Xcompiler -Wall,-Wextra -I"$src/include" -I"$DEPS/include" \
      -c "$f" -o "$o" >>"$OUT/build.log" 2>&1 &
  done
  for f in "$src"/src/cuda/*.cpp; do
    o=$dir/$(basename "$f").o; objs+=("$o")
    g++ "${fl[@]}" -Wall -Wextra -c "$f" -o "$o" >>"$OUT/build.log" 2>&1 &
  done
  for f in "$src"/tools/dsv4.cpp "$src"/tools/cli/cmd_*.cpp; do
    o=$dir/cli_$(basename "$f").o; cli+=("$o")
    g++ "${fl[@]}" -c "$f" -o "$o" >>"$OUT/build.log" 2>&1 &
  done
  if [[ $src == "$PWD" ]]; then
    g++ "${fl[@]}" -Wall -Wextra -c tests/test_cuda_model.cpp -o "$dir/test_cuda_model.o" >>"$OUT/build.log" 2>&1 &
    g++ "${fl[@]}" -Wall -Wextra -c tests/test_cuda_v3.cpp -o "$dir/test_cuda_v3.o" >>"$OUT/build.log" 2>&1 &
    g++ "${fl[@]}" -Wall -Wextra -c tests/test_cuda_split.cpp -o "$dir/test_cuda_split.o" >>"$OUT/build.log" 2>&1 &
    g++ "${fl[@]}" -Wall -Wextra -c tests/test_cuda_gemv.cpp -o "$dir/test_cuda_gemv.o" >>"$OUT/build.log" 2>&1 &
    g++ "${fl[@]}" -Wall -Wextra -c tests/test_cuda_prefill.cpp -o "$dir/test_cuda_prefill.o" >>"$OUT/build.log" 2>&1 &
  fi
  # The prefill bench uses only the public API: this tree's source, built against each tree's headers.
  g++ "${fl[@]}" -Wall -Wextra -c "$PWD/bench/cuda_prefill_bench.cpp" -o "$dir/cuda_prefill_bench.o" >>"$OUT/build.log" 2>&1 &
  g++ "${fl[@]}" -Wall -Wextra -c bench/cuda_decode_bench.cpp -o "$dir/cuda_decode_bench.o" >>"$OUT/build.log" 2>&1 &
  wait
  if [[ $src == "$PWD" ]]; then
    g++ -o "$dir/test_cuda_model" "$dir/test_cuda_model.o" "${objs[@]}" "${libs[@]}" >>"$OUT/build.log" 2>&1
    g++ -o "$dir/test_cuda_v3" "$dir/test_cuda_v3.o" "${objs[@]}" "${libs[@]}" >>"$OUT/build.log" 2>&1
    g++ -o "$dir/test_cuda_split" "$dir/test_cuda_split.o" "${objs[@]}" "${libs[@]}" >>"$OUT/build.log" 2>&1
    g++ -o "$dir/test_cuda_gemv" "$dir/test_cuda_gemv.o" "${objs[@]}" "${libs[@]}" >>"$OUT/build.log" 2>&1
    g++ -o "$dir/test_cuda_prefill" "$dir/test_cuda_prefill.o" "${objs[@]}" "${libs[@]}" >>"$OUT/build.log" 2>&1
  fi
  g++ -o "$dir/cuda_prefill_bench" "$dir/cuda_prefill_bench.o" "${objs[@]}" "${libs[@]}" >>"$OUT/build.log" 2>&1
  g++ -o "$dir/dsv4" "${cli[@]}" "${objs[@]}" "${libs[@]}" >>"$OUT/build.log" 2>&1
  g++ -o "$dir/cuda_decode_bench" "$dir/cuda_decode_bench.o" "${objs[@]}" "${libs[@]}" >>"$OUT/build.log" 2>&1
  "$nvcc" -std=c++20 -O3 -arch=sm_90 -I"$src/include" "$src/bench/cuda_gemv_bench.cu" "$dir/gemv.cu.o" -o "$dir/cuda_gemv_bench" \
    >>"$OUT/build.log" 2>&1
}

echo "== build" | tee "$OUT/build.log"
# BASE=DIR: also the tree at DIR (e.g. the unchanged main branch), for before/after in one run.
base_b=/tmp/dsv4-cuda-base
[[ -n ${BASE:-} ]] && build_tree "$(cd "$BASE" && pwd)" "$base_b" &
build_tree "$PWD" "$b"
wait
ls "$b/dsv4" "$b/test_cuda_model" "$b/test_cuda_v3" "$b/test_cuda_gemv" "$b/test_cuda_prefill" "$b/cuda_decode_bench" "$b/cuda_prefill_bench" >/dev/null || { grep -E "error|Error" "$OUT/build.log" | head -40; tail -30 "$OUT/build.log"; exit 1; }
[[ -z ${BASE:-} ]] || ls "$base_b/dsv4" "$base_b/cuda_decode_bench" >/dev/null || { tail -50 "$OUT/build.log"; exit 1; }
grep -E "warning" "$OUT/build.log" | grep -v "^nvcc warning" | head -20
echo "built"

# The synthetic model for the bench is written in the background while the tests run.
m=/tmp/v4f_$layers
synth_pid=
if [[ $what == v3 ]]; then  # DeepSeek-V3 shapes: the first 3 layers dense, MoE from the 4th
  m=/tmp/v3_$layers
  (time "$b/dsv4" synth --preset v3 --layers "$layers" --out "$m") > "$b/synth.log" 2>&1 &
  synth_pid=$!
elif [[ $what != test && ! -f $m/config.json ]]; then
  (time "$b/dsv4" synth --preset v4-flash --layers "$layers" --out "$m") > "$b/synth.log" 2>&1 &
  synth_pid=$!
fi

status=0
if [[ $what == test || $what == all || $what == final || $what == prefill || $what == v3 ]]; then
  echo "== tests"
  # DeepSeek-V3 (MLA, group-limited router, dense layers): golden v3tiny and CPU-vs-GPU synthetic shapes.
  timeout ${V3_TEST_TIMEOUT:-300} "$b/test_cuda_v3" >"$OUT/test_cuda_v3.log" 2>&1 || status=1
  grep -E "^v3 |passed|failed|FAILED" "$OUT/test_cuda_v3.log" | tail -30
  "$b/test_cuda_prefill" > "$OUT/test_cuda_prefill.log" 2>&1 || status=1
  cat "$OUT/test_cuda_prefill.log"
  # The expert GEMM's 3-stage build too (DSV4_CUDA_MOE_STAGES=3).
  DSV4_CUDA_MOE_STAGES=3 "$b/test_cuda_prefill" > "$OUT/test_cuda_prefill_moe3.log" 2>&1 || status=1
  grep -E "failure|FAIL" "$OUT/test_cuda_prefill_moe3.log" | sed 's/^/moe stages 3: /'
  "$b/test_cuda_gemv" > "$OUT/test_cuda_gemv.log" 2>&1 || status=1
  grep -E "FAIL|expert jobs" "$OUT/test_cuda_gemv.log" | head -12; tail -1 "$OUT/test_cuda_gemv.log"
  timeout ${MODEL_TEST_TIMEOUT:-400} "$b/test_cuda_model" >"$OUT/test_cuda_model.log" 2>&1 || status=1
  tail -5 "$OUT/test_cuda_model.log"
  if [[ -z ${SKIP_SPLIT:-} ]]; then  # SKIP_SPLIT=1: not the split tests (scripts/cuda_device.sh split runs them)
    timeout 400 "$b/test_cuda_split" >"$OUT/test_cuda_split.log" 2>&1 || status=1
    tail -3 "$OUT/test_cuda_split.log"
  fi
  # ERRORS=1: the checks' error figures too (a second run, with -s).
  [[ -n ${ERRORS:-} ]] && timeout 400 "$b/test_cuda_model" -s 2>&1 | grep -A1 "with expansion" | grep -E "error|agreement" \
    | sort -u | tee "$OUT/test_cuda_model_errors.log"
  # The tool with --backend cuda against the CPU on the tiny golden model.
  t=tests/data/tiny/hf
  "$b/dsv4" logits --model $t --input tests/data/tiny/expected.safetensors --out /tmp/cpu.safetensors --mode reference
  "$b/dsv4" logits --backend cuda --model $t --input tests/data/tiny/expected.safetensors --out /tmp/gpu.safetensors \
    --mode reference --chunks 7,50
  python3 -c "
from safetensors.numpy import load_file
a, b = load_file('/tmp/cpu.safetensors')['logits'], load_file('/tmp/gpu.safetensors')['logits']
d = abs(a - b).max(); print('dsv4 logits --backend cuda vs cpu: max abs diff', d); assert d < 1e-3" 2>&1 | tee "$OUT/cli.log" || status=1
  g1=$("$b/dsv4" generate --model $t --prompt-ids 5,17,42 --max-new-tokens 12 --greedy --mode reference)
  g2=$("$b/dsv4" generate --backend cuda --model $t --prompt-ids 5,17,42 --max-new-tokens 12 --greedy --mode reference)
  echo "generate cpu: $g1 / cuda: $g2" | tee -a "$OUT/cli.log"
  [[ "$g1" == "$g2" ]] || status=1
  # The same on the V3 golden model (both layouts).
  for lay in hf orig; do
    t=tests/data/v3tiny/$lay
    "$b/dsv4" logits --model $t --input tests/data/v3tiny/expected.safetensors --out /tmp/cpu3.safetensors --mode reference
    "$b/dsv4" logits --backend cuda --model $t --input tests/data/v3tiny/expected.safetensors --out /tmp/gpu3.safetensors \
      --mode reference --chunks 7,50
    python3 -c "
from safetensors.numpy import load_file
a, b = load_file('/tmp/cpu3.safetensors')['logits'], load_file('/tmp/gpu3.safetensors')['logits']
d = abs(a - b).max(); print('v3tiny/$lay: dsv4 logits --backend cuda vs cpu: max abs diff', d); assert d < 1e-3" 2>&1 | tee -a "$OUT/cli.log" || status=1
    g1=$("$b/dsv4" generate --model $t --prompt-ids 5,17,42 --max-new-tokens 12 --greedy --mode reference)
    g2=$("$b/dsv4" generate --backend cuda --model $t --prompt-ids 5,17,42 --max-new-tokens 12 --greedy --mode reference)
    echo "v3tiny/$lay generate cpu: $g1 / cuda: $g2" | tee -a "$OUT/cli.log"
    [[ "$g1" == "$g2" ]] || status=1
  done
  echo "tests status $status"
fi

if [[ $what == bench || $what == all ]]; then
  echo "== bench ($layers layers of V4-Flash)"
  "$b/cuda_gemv_bench" > "$OUT/gemv_bench.txt" 2>&1
  sed -n '/^scheme/,$p' "$OUT/gemv_bench.txt" | awk 'NR==1 || ($2==16384 && ($4==1 || $4==8))'
  [[ -n $synth_pid ]] && { wait "$synth_pid"; tail -3 "$b/synth.log"; }
  # The earlier FMA GEMV kernels first (DSV4_CUDA_GEMV=legacy), then the tensor-core ones.
  DSV4_CUDA_GEMV=legacy timeout ${BENCH_TIMEOUT:-300} "$b/dsv4" bench --backend cuda --model "$m" --prompt-tokens 2048 --decode-tokens 32 \
    --batch 1,8,32 > "$OUT/dsv4_bench_${layers}_legacy.txt" 2>&1
  timeout ${BENCH_TIMEOUT:-300} "$b/dsv4" bench --backend cuda --model "$m" --prompt-tokens 2048 --decode-tokens 32 \
    --batch 1,8,32 2>&1 | tee "$OUT/dsv4_bench_$layers.txt"
  echo "legacy GEMV:"; grep -iE "decode|tokens/s|GB/s" "$OUT/dsv4_bench_${layers}_legacy.txt" | head -12
  # transformers holds BF16 weights: 4 layers of V4-Flash fit an 80 GB GPU, 8 do not.
  [[ -n ${SKIP_TRANSFORMERS:-} ]] || PYTHONUNBUFFERED=1 timeout 300 python3 bench/transformers_v4.py --layers "$layers" --prompt-tokens 2048 \
    --decode-tokens 8 --batch 1,8 2>&1 | tail -5 | tee "$OUT/transformers_$layers.txt"
fi
# v3: after the tests, dsv4 bench of the synthetic V3 (layers as given; 4 = 3 dense + 1 MoE layer).
if [[ $what == v3 ]]; then
  [[ -n $synth_pid ]] && { wait "$synth_pid"; tail -3 "$b/synth.log"; synth_pid=; }
  timeout ${BENCH_TIMEOUT:-300} "$b/dsv4" bench --backend cuda --model "$m" --prompt-tokens ${PROMPT:-2048} --decode-tokens 32 \
    --batch 1,8 2>&1 | tee "$OUT/dsv4_bench_v3_$layers.txt"
  # transformers' DeepseekV3ForCausalLM at the same shapes (random BF16 weights).
  [[ -n ${SKIP_TRANSFORMERS:-} ]] || PYTHONUNBUFFERED=1 timeout 300 python3 bench/transformers_v3.py --config "$m/config.json" \
    --prompt-tokens ${PROMPT:-2048} --decode-tokens 8 --batch 1,8 2>&1 | tail -5 | tee "$OUT/transformers_v3_$layers.txt"
fi
# prefill: after the tests, the prefill bench (2048 tokens unless PROMPT) of each tree, alternating,
# ROUNDS rounds (default 2), with the device-time split of each; then the decode bench at batch 1, 8.
if [[ $what == prefill ]]; then
  [[ -n $synth_pid ]] && { wait "$synth_pid"; tail -3 "$b/synth.log"; synth_pid=; }
  trees=("$b"); names=(new)
  [[ -n ${BASE:-} ]] && trees=("$base_b" "$b") names=(base new)
  for round in $(seq 1 "${ROUNDS:-2}"); do
    for i in "${!trees[@]}"; do
      echo "== prefill bench: ${names[$i]}, round $round" | tee -a "$OUT/prefill_bench.txt"
      timeout 300 "${trees[$i]}/cuda_prefill_bench" "$m" ${PROMPT:-2048} ${RUNS:-3} 2>&1 | tee -a "$OUT/prefill_bench.txt"
    done
  done
  # MOE3=1: this tree's prefill with the expert GEMM's 3-stage build as well.
  [[ -n ${MOE3:-} ]] && { echo "== prefill bench: new, DSV4_CUDA_MOE_STAGES=3" | tee -a "$OUT/prefill_bench.txt";
    DSV4_CUDA_MOE_STAGES=3 timeout 300 "$b/cuda_prefill_bench" "$m" ${PROMPT:-2048} ${RUNS:-3} 2>&1 | tee -a "$OUT/prefill_bench.txt"; }
  for i in "${!trees[@]}"; do
    echo "== decode bench: ${names[$i]}" | tee -a "$OUT/decode_bench.txt"
    timeout 300 "${trees[$i]}/cuda_decode_bench" "$m" ${PROMPT:-2048} 32 ${DECODE_BATCHES:-1,8} 2>&1 | tee -a "$OUT/decode_bench.txt"
  done
  # NCU_PREFILL="new base": every kernel of one prefill timed by Nsight Compute, per tree named.
  ncu_bin=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
  for i in "${!trees[@]}"; do
    [[ " ${NCU_PREFILL:-} " == *" ${names[$i]} "* ]] || continue
    DSV4_PREFILL_NCU=1 timeout 300 "$ncu_bin" --clock-control none --cache-control none --profile-from-start off \
      --metrics gpu__time_duration.sum --csv --print-units base "${trees[$i]}/cuda_prefill_bench" "$m" ${PROMPT:-2048} \
      > "$OUT/ncu_prefill_${names[$i]}.csv" 2> "$OUT/ncu_prefill_${names[$i]}.err"
    python3 bench/cuda_kernel_table.py "$OUT/ncu_prefill_${names[$i]}.csv" > "$OUT/kernels_prefill_${names[$i]}.txt" 2>&1
    echo "-- prefill kernels: ${names[$i]}"; head -30 "$OUT/kernels_prefill_${names[$i]}.txt"
  done
  # NCU_DETAIL=regex: the profiler's throughput, warp-state and occupancy sections for the first two
  # launches of the matching kernels in one prefill of this tree.
  [[ -n ${NCU_DETAIL:-} ]] && DSV4_PREFILL_NCU=1 timeout 300 "$ncu_bin" --clock-control none --profile-from-start off \
    -k "regex:${NCU_DETAIL}" --launch-count ${NCU_COUNT:-2} --section SpeedOfLight --section WarpStateStats \
    --section ComputeWorkloadAnalysis --section Occupancy --section MemoryWorkloadAnalysis "$b/cuda_prefill_bench" "$m" \
    ${PROMPT:-2048} > "$OUT/ncu_detail.txt" 2>&1 && grep -E "^  [a-z_].*\(|Duration|Throughput|Stall|Issued|Eligible|Warp Cycles|Achieved Occ|Pipe|Registers|Shared Memory Config" \
    "$OUT/ncu_detail.txt" | head -${NCU_LINES:-90}
  [[ -n ${NSYS:-} ]] && command -v nsys >/dev/null && { nsys profile -o "$OUT/prefill" --force-overwrite true \
    "$b/cuda_prefill_bench" "$m" ${PROMPT:-2048} 1 > /dev/null 2>&1; nsys stats -r cuda_gpu_kern_sum "$OUT/prefill.nsys-rep" \
    2>/dev/null | head -30 | tee "$OUT/nsys_kernels.txt"; rm -f "$OUT/prefill.nsys-rep" "$OUT"/*.sqlite; }
  [[ -n ${TRANSFORMERS:-} ]] && PYTHONUNBUFFERED=1 timeout 300 python3 bench/transformers_v4.py --layers "$layers" \
    --prompt-tokens ${PROMPT:-2048} --decode-tokens 8 --batch 1 2>&1 | tail -5 | tee "$OUT/transformers_$layers.txt"
fi
if [[ $what == profile || $what == decode || $what == final ]]; then
  [[ -n $synth_pid ]] && { wait "$synth_pid"; tail -3 "$b/synth.log"; synth_pid=; }
  trees=("$b"); names=(new)
  [[ -n ${BASE:-} ]] && trees=("$base_b" "$b") names=(base new)
  rounds=1; [[ -n ${BASE:-} ]] && rounds="1 2"
  [[ -n ${ROUNDS:-} ]] && rounds=$(seq 1 "$ROUNDS")
  for round in $rounds; do
    for i in "${!trees[@]}"; do
      t=${trees[$i]} n=${names[$i]}
      echo "== decode bench: $n, round $round" | tee -a "$OUT/decode_bench.txt"
      timeout 300 "$t/cuda_decode_bench" "$m" ${PROMPT:-2048} 32 1,8,32 2>&1 | tee -a "$OUT/decode_bench.txt"
    done
  done
  # EXTRA_ENVS="A=0 B=1,C=2": this tree's decode bench again under each set of variables (commas
  # join the variables of one set), for an A/B of a knob in the same run.
  for e in ${EXTRA_ENVS:-}; do
    echo "== decode bench: new, ${e//,/ }" | tee -a "$OUT/decode_bench.txt"
    env ${e//,/ } timeout 300 "$b/cuda_decode_bench" "$m" ${PROMPT:-2048} 32 1,8,32 2>&1 | tee -a "$OUT/decode_bench.txt"
  done
  for i in "${!trees[@]}"; do
    t=${trees[$i]} n=${names[$i]}
    echo "== dsv4 bench: $n" | tee -a "$OUT/dsv4_bench_decode.txt"
    timeout 300 "$t/dsv4" bench --backend cuda --model "$m" --prompt-tokens 2048 --decode-tokens 32 --batch 1,8,32 2>&1 \
      | grep -E "device copy|prefill  |decode batch" | tee -a "$OUT/dsv4_bench_decode.txt"
    [[ $what == decode ]] && continue
    [[ -n ${PROFILE_TREES:-} && " $PROFILE_TREES " != *" $n "* ]] && continue
    # The part split of batch-1 decode (events between parts, graphs off).
    DSV4_CUDA_PROFILE=1 timeout 300 "$t/dsv4" bench --backend cuda --model "$m" --prompt-tokens 2048 --decode-tokens 16 \
      --batch 1 2>&1 | grep -E "profile decode|decode batch" > "$OUT/profile_split_$n.txt"
    cat "$OUT/profile_split_$n.txt"
    ncu_bin=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    [[ -n ${NCU_TREES:-} && " $NCU_TREES " != *" $n "* ]] && continue
    for B in ${NCU_BATCHES-1 8}; do
      DSV4_DECODE_NCU=$B timeout 300 "$ncu_bin" --clock-control none --cache-control none --profile-from-start off \
        --metrics gpu__time_duration.sum --csv --print-units base "$t/cuda_decode_bench" "$m" ${PROMPT:-2048} 4 $B \
        > "$OUT/ncu_step_${n}_b$B.csv" 2> "$OUT/ncu_step_${n}_b$B.err"
      python3 bench/cuda_kernel_table.py "$OUT/ncu_step_${n}_b$B.csv" > "$OUT/kernels_${n}_b$B.txt" 2>&1
      echo "-- $n batch $B"; head -40 "$OUT/kernels_${n}_b$B.txt"
    done
  done
fi
exit $status
