#!/usr/bin/env bash
# Build, test and benchmark the CUDA backend on a GPU machine that has the CUDA toolkit but none of
# the Debian -dev packages (the lent H100): headers and a static PCRE2 come from $DEPS
# (include/{nlohmann,xsimd,catch2,pcre2.h}, lib/libpcre2-8.a, copied from a Debian machine).
#   DEPS=third_party_device/deps OUT=/tmp/out scripts/cuda_device.sh [test|bench|all] [layers]
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

status=0
if [[ $what == test || $what == all ]]; then
  echo "== tests"
  "$b/test_cuda_gemv" 2>&1 | tail -5 | tee "$OUT/test_cuda_gemv.log" || status=1
  timeout 400 "$b/test_cuda_model" >"$OUT/test_cuda_model.log" 2>&1 || status=1
  tail -40 "$OUT/test_cuda_model.log"
  timeout 400 "$b/test_cuda_model" -s 2>&1 | grep -A1 "with expansion" | grep -E "error|agreement" | sort -u \
    | tee "$OUT/test_cuda_model_errors.log"
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
  "$b/cuda_gemv_bench" 2>&1 | tee "$OUT/gemv_bench.txt"
  m=/tmp/v4f_$layers
  [[ -f $m/config.json ]] || (time "$b/dsv4" synth --preset v4-flash --layers "$layers" --out "$m") 2>&1 | tail -3
  timeout 300 "$b/dsv4" bench --backend cuda --model "$m" --prompt-tokens 2048 --decode-tokens 32 --batch 1,8,32 \
    2>&1 | tee "$OUT/dsv4_bench_$layers.txt"
  # transformers holds BF16 weights: 4 layers of V4-Flash fit an 80 GB GPU, 8 do not.
  [[ -n ${SKIP_TRANSFORMERS:-} ]] || PYTHONUNBUFFERED=1 timeout 300 python3 bench/transformers_v4.py --layers "$layers" --prompt-tokens 2048 \
    --decode-tokens 8 --batch 1,8 2>&1 | tail -5 | tee "$OUT/transformers_$layers.txt"
fi
exit $status
