#!/usr/bin/env python3
"""Decode and prefill speed of transformers' DeepseekV3ForCausalLM on the GPU at the shapes of a
dsv4 checkpoint's config.json (e.g. `dsv4 synth --preset v3 --layers 4`), with random bf16 weights
(the speed of a forward pass does not depend on the values; transformers would need its FP8 kernels
to read the release layout), beside `dsv4 bench --backend cuda` on that checkpoint (README).

    python3 bench/transformers_v3.py --config /tmp/v3_4/config.json --prompt-tokens 2048 --batch 1,8
Prints one JSON line.
"""
import argparse
import json

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from transformers_v4 import measure


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=16)
    ap.add_argument("--batch", default="1")
    a = ap.parse_args()
    with open(a.config) as f:
        cfg = json.load(f)
    cfg.pop("quantization_config", None)  # bf16 weights
    cfg["num_nextn_predict_layers"] = 0
    torch.manual_seed(0)
    config = AutoConfig.for_model(**cfg)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
    model.eval()
    out = {"layers": config.num_hidden_layers}
    out.update(measure(model, config.vocab_size, a.prompt_tokens, a.decode_tokens, [int(x) for x in a.batch.split(",")]))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
