#!/usr/bin/env bash
# Splitting a synthetic V4-Flash (reduced depth, release formats) over MPI ranks on one machine:
# decode speed, bytes read and time in collectives for one process, expert parallelism and tensor
# parallelism, each run twice in alternation (the machine is shared and noisy), and the logits of
# the three compared on one prompt.
#   bench/parallel_cpu.sh [BUILD_DIR] [LAYERS]     (results: bench/results/parallel_cpu.{jsonl,md})
set -euo pipefail
build=${1:-build}
layers=${2:-2}
dsv4=$build/dsv4
model=${MODEL:-/tmp/dsv4-flash-$layers}
ranks=${RANKS:-2}
threads=$(nproc)
out=bench/results
mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # containers run as root
mpi=(mpirun --oversubscribe --bind-to none -np "$ranks")
[[ -f $model/config.json ]] || "$dsv4" synth --preset v4-flash --layers "$layers" --out "$model"

bench=(bench --model "$model" --prompt-tokens 64 --decode-tokens 16)
: >"$out/parallel_cpu.jsonl"
for round in 1 2; do
  for run in one expert tensor; do
    case $run in
      one) line=$("$dsv4" "${bench[@]}" --threads "$threads" | tail -1) ;;
      *) line=$("${mpi[@]}" "$dsv4" "${bench[@]}" --threads $((threads / ranks)) --parallel "$run" | tail -1) ;;
    esac
    echo "{\"run\": \"$run\", \"round\": $round, ${line#\{}" | tee -a "$out/parallel_cpu.jsonl"
  done
done

# Logits of one 16-token prompt: one process against each split, in fast and reference mode.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp/in.safetensors" <<'EOF'
import json, struct, sys
ids = [(7919 * i + 13) % 129280 for i in range(16)]
body = struct.pack('<%di' % len(ids), *ids)
head = json.dumps({"input_ids": {"dtype": "I32", "shape": [1, len(ids)], "data_offsets": [0, len(body)]}}).encode()
head += b' ' * (-len(head) % 8)
open(sys.argv[1], 'wb').write(struct.pack('<Q', len(head)) + head + body)
EOF
for mode in fast reference; do
  "$dsv4" logits --model "$model" --input "$tmp/in.safetensors" --out "$tmp/one_$mode.safetensors" --mode $mode --threads "$threads"
  for run in expert tensor; do
    "${mpi[@]}" "$dsv4" logits --model "$model" --input "$tmp/in.safetensors" --out "$tmp/${run}_$mode.safetensors" \
      --mode $mode --threads $((threads / ranks)) --parallel $run
  done
done
python3 - "$tmp" "$out/parallel_cpu.jsonl" <<'EOF' | tee "$out/parallel_cpu.md"
import json, struct, sys
def floats(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    t = json.loads(b[8:8 + n])['logits']
    s, e = t['data_offsets']
    return struct.unpack('<%df' % ((e - s) // 4), b[8 + n + s:8 + n + e])
tmp, jsonl = sys.argv[1], sys.argv[2]
runs = [json.loads(l) for l in open(jsonl)]
names = {'one': '1 process', 'expert': 'expert parallel', 'tensor': 'tensor + expert parallel'}
print('| run | decode ms/token (two runs) | bytes read per token (all ranks) | roofline | time in collectives |')
print('|---|---|---|---|---|')
for name in ['one', 'expert', 'tensor']:
    rs = [r for r in runs if r['run'] == name]
    ms = ' / '.join('%.1f' % (1e3 / r['decode_tokens_per_s']) for r in rs)
    roof = ' / '.join('%.0f %%' % (100 * r['roofline_fraction']) for r in rs)
    comm = ' / '.join('%.0f %%' % (100 * r['collectives_fraction']) for r in rs) if name != 'one' else '—'
    print('| %s | %s | %.0f MB | %s | %s |' % (names[name], ms, rs[0]['active_bytes_per_token'] / 1e6, roof, comm))
print()
for mode in ['fast', 'reference']:
    one = floats('%s/one_%s.safetensors' % (tmp, mode))
    big = max(abs(x) for x in one)
    for run in ['expert', 'tensor']:
        other = floats('%s/%s_%s.safetensors' % (tmp, run, mode))
        err = max(abs(a - b) for a, b in zip(one, other))
        print('- %s mode, %s vs one process: max abs logit difference %.2e (largest logit %.2f)' % (mode, names[run], err, big))
EOF
