#!/usr/bin/env bash
# A small model that text examples can run: tests/data/tiny's shapes with DeepSeek's vocabulary
# (129280), random weights, and the DeepSeek tokenizer.   usage: make_text_model.sh DSV4 TINY_CONFIG TOKENIZER_DIR OUT
set -euo pipefail
dsv4=$1 config=$2 tokenizer=$3 out=$4
rm -rf "$out"
mkdir -p "$out"
sed 's/"vocab_size": *512/"vocab_size": 129280/' "$config" >"$out/config.source.json"
grep -q '"vocab_size": 129280' "$out/config.source.json"
"$dsv4" synth --config "$out/config.source.json" --out "$out" --seed 3 >/dev/null
cp "$tokenizer/tokenizer.json" "$tokenizer/tokenizer_config.json" "$out/"
