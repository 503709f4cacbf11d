#!/usr/bin/env bash
# Build, test and benchmark the CUDA backend on a GPU machine that has the CUDA toolkit but none of
# the Debian -dev packages (the lent H100): headers and a static PCRE2 come from $DEPS
# (include/{nlohmann,xsimd,catch2,pcre2.h}, lib/libpcre2-8.a, copied from a Debian machine).
#   DEPS=third_party_device/deps OUT=/tmp/out scripts/cuda_device.sh [test|bench|all|gemv] [layers]
# gemv: only the GEMV (src/cuda/gemv.cu): its test, the bandwidth bench and the SASS of the
# tensor-core kernels, in about a minute. bench: also DSV4_CUDA_GEMV=legacy for the earlier kernels.
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
nvidia-smi -L | tee "$OUT/device.txt"

flags=(-std=c++20 -O2 -fopenmp -march=native -Iinclude -I"$DEPS/include" -I"$cuda/include" -DDSV4_WITH_CUDA
       -DDSV4_TEST_DATA="\"$PWD/tests/data\"" -DDSV4_GOLDEN_ROOT="\"$PWD/tests/data\"")
libs=(-L"$cuda/lib64" -lcudart -lcublas "$DEPS/lib/libpcre2-8.a" -fopenmp -lpthread -ldl)

if [[ $what == gemv ]]; then
  echo "== build (gemv)" | tee "$OUT/build.log"
  nv=("$nvcc" -std=c++20 -O3 -arch=sm_90 --expt-relaxed-constexpr -Iinclude -I"$DEPS/include")
  "${nv[@]}" -Xptxas -v -c src/cuda/gemv.cu -o "$b/gemv.cu.o" >>"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
  g++ "${flags[@]}" -c tests/test_cuda_gemv.cpp -o "$b/test_cuda_gemv.o" >>"$OUT/build.log" 2>&1 &
  "${nv[@]}" bench/cuda_gemv_bench.cu "$b/gemv.cu.o" -o "$b/cuda_gemv_bench" >>"$OUT/build.log" 2>&1 &
  wait
  g++ -o "$b/test_cuda_gemv" "$b/test_cuda_gemv.o" "$b/gemv.cu.o" -L"$cuda/lib64" -lcudart >>"$OUT/build.log" 2>&1
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

echo "== build" | tee "$OUT/build.log"
objs=()
for f in src/cuda/*.cu; do
  o=$b/$(basename "$f").o; objs+=("$o")
  "$nvcc" -std=c++20 -O3 -arch=sm_90 --expt-relaxed-constexpr -Iinclude -I"$DEPS/include" -c "$f" -o "$o" >>"$OUT/build.log" 2>&1 &
done
for f in src/cuda/*.cpp; do
  o=$b/$(basename "$f").o; objs+=("$o")
  g++ "${flags[@]}" -c "$f" -o "$o" >>"$OUT/build.log" 2>&1 &
done
cli=()
for f in tools/dsv4.cpp tools/cli/cmd_*.cpp; do
  o=$b/cli_$(basename "$f").o; cli+=("$o")
  g++ "${flags[@]}" -c "$f" -o "$o" >>"$OUT/build.log" 2>&1 &
done
g++ "${flags[@]}" -c tests/test_cuda_model.cpp -o "$b/test_cuda_model.o" >>"$OUT/build.log" 2>&1 &
g++ "${flags[@]}" -c tests/test_cuda_gemv.cpp -o "$b/test_cuda_gemv.o" >>"$OUT/build.log" 2>&1 &
wait
g++ -o "$b/test_cuda_model" "$b/test_cuda_model.o" "${objs[@]}" "${libs[@]}" >>"$OUT/build.log" 2>&1
g++ -o "$b/test_cuda_gemv" "$b/test_cuda_gemv.o" "${objs[@]}" "${libs[@]}" >>"$OUT/build.log" 2>&1
g++ -o "$b/dsv4" "${cli[@]}" "${objs[@]}" "${libs[@]}" >>"$OUT/build.log" 2>&1
"$nvcc" -std=c++20 -O3 -arch=sm_90 -Iinclude bench/cuda_gemv_bench.cu "$b/gemv.cu.o" -o "$b/cuda_gemv_bench" >>"$OUT/build.log" 2>&1
ls "$b/dsv4" "$b/test_cuda_model" "$b/test_cuda_gemv" >/dev/null || { tail -50 "$OUT/build.log"; exit 1; }
echo "built"

# The synthetic model for the bench is written in the background while the tests run.
m=/tmp/v4f_$layers
synth_pid=
if [[ ($what == bench || $what == all) && ! -f $m/config.json ]]; then
  (time "$b/dsv4" synth --preset v4-flash --layers "$layers" --out "$m") > "$b/synth.log" 2>&1 &
  synth_pid=$!
fi

status=0
if [[ $what == test || $what == all ]]; then
  echo "== tests"
  "$b/test_cuda_gemv" 2>&1 | tail -5 | tee "$OUT/test_cuda_gemv.log" || status=1
  timeout ${MODEL_TEST_TIMEOUT:-400} "$b/test_cuda_model" >"$OUT/test_cuda_model.log" 2>&1 || status=1
  tail -5 "$OUT/test_cuda_model.log"
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
exit $status
