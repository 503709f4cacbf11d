#!/usr/bin/env python3
"""Decode and prefill speed of the transformers implementation of DeepSeek-V4 on the GPU, at the
shapes of `dsv4 synth --preset v4-flash --layers L` (random bf16 weights: the speed of a forward pass
does not depend on the values), for the side-by-side table of the CUDA backend (README).

    python3 bench/transformers_v4.py --layers 4 --prompt-tokens 512 --decode-tokens 16 --batch 1,8
Prints one JSON line.
"""
import argparse
import json
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def v4_flash_config(layers):
    # The same layer pattern as dsv4's synth preset: two sliding layers, then CSA (m=4) and HCA
    # (m=128) alternating; the first three layers hash-routed.
    kinds = []
    for i in range(layers):
        kinds.append("sliding_attention" if i < 2 else
                     "compressed_sparse_attention" if i % 2 == 0 else "heavily_compressed_attention")
    cfg = dict(
        architectures=["DeepseekV4ForCausalLM"], model_type="deepseek_v4", vocab_size=129280, hidden_size=4096,
        num_hidden_layers=layers, num_attention_heads=64, num_key_value_heads=1, head_dim=512,
        qk_rope_head_dim=64, partial_rotary_factor=64 / 512, q_lora_rank=1024, o_groups=8, o_lora_rank=1024,
        n_routed_experts=256, n_shared_experts=1, num_experts_per_tok=6, moe_intermediate_size=2048,
        routed_scaling_factor=1.5, scoring_func="sqrtsoftplus", swiglu_limit=10.0, norm_topk_prob=True,
        sliding_window=128, index_n_heads=64, index_head_dim=128, index_topk=512, hc_mult=4,
        hc_sinkhorn_iters=20, hc_eps=1e-6, rms_norm_eps=1e-6, layer_types=kinds,
        mlp_layer_types=["hash_moe" if i < min(3, layers) else "moe" for i in range(layers)],
        compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 128},
        max_position_embeddings=65536, num_nextn_predict_layers=0, tie_word_embeddings=False,
        bos_token_id=0, eos_token_id=1, pad_token_id=None, use_cache=True, rope_theta=10000.0,
        rope_parameters={
            "main": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 64 / 512},
            "compress": {"rope_type": "yarn", "rope_theta": 160000.0, "factor": 16.0, "beta_fast": 32.0,
                         "beta_slow": 1.0, "original_max_position_embeddings": 65536, "attention_factor": 1.0,
                         "partial_rotary_factor": 64 / 512}},
    )
    return AutoConfig.for_model(**cfg)


def measure(model, vocab_size, prompt_tokens, decode_tokens, batches):
    """Prefill tokens/s of one prompt and greedy decode tokens/s at each batch size (with the KV
    cache, the argmax on the GPU), on random prompt ids: a dict for the JSON line."""
    out = {"device": torch.cuda.get_device_name(), "transformers_dtype": "bfloat16"}
    gen = torch.Generator(device="cpu").manual_seed(1)
    prompt = torch.randint(2, vocab_size, (1, prompt_tokens), generator=gen).cuda()
    with torch.no_grad():
        model(prompt[:, :8])  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(prompt, use_cache=True)
        torch.cuda.synchronize()
        out["prefill_tokens_per_s"] = prompt_tokens / (time.perf_counter() - t0)
        out["decode"] = []
        for b in batches:
            ids = prompt.repeat(b, 1)
            r = model(ids, use_cache=True)
            past = r.past_key_values
            nxt = r.logits[:, -1].argmax(-1, keepdim=True)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(decode_tokens):
                r = model(nxt, past_key_values=past, use_cache=True)
                past = r.past_key_values
                nxt = r.logits[:, -1].argmax(-1, keepdim=True)
            torch.cuda.synchronize()
            s = time.perf_counter() - t0
            out["decode"].append({"batch": b, "tokens_per_s": b * decode_tokens / s,
                                  "ms_per_step": 1e3 * s / decode_tokens})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=16)
    ap.add_argument("--batch", default="1")
    a = ap.parse_args()
    torch.manual_seed(0)
    config = v4_flash_config(a.layers)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
    model.eval()
    # Hash routing tables: valid expert ids (random init may leave them at zero: still valid).
    for name, buf in model.named_buffers():
        if "tid2eid" in name:
            buf.copy_(torch.randint(0, config.n_routed_experts, buf.shape, device=buf.device, dtype=buf.dtype))
    out = {"layers": a.layers}
    out.update(measure(model, config.vocab_size, a.prompt_tokens, a.decode_tokens, [int(x) for x in a.batch.split(",")]))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
