#pragma once
// Launchers of the CUDA backend's multi-head latent attention (DeepSeek-V3, spec MLA.md;
// src/cuda/mla.cu), callable from plain C++ like kernels.hpp. The cache of a sequence holds per
// position the normed latent l (c values) and the roped k_rope (dr values), nothing per head.
// Every row attends absorbed: its query is mapped into latent space by W_k,h (the head's dn key
// rows of kv_b_proj), scored against the cached rows directly, and the weighted sum of latents is
// mapped to the head's value space by W_v,h afterwards, so no per-head key or value is materialised.
// Launch sizes depend on the row count and max_keys only (decode steps are captured as graphs).
#include <cstdint>

#include "dsv4/cuda/gemv.hpp"
#include "kernels.hpp"

namespace dsv4::cuda::k {

// MLA's rope table: interleaved pairs (2i, 2i+1) or split-half (i, i + r/2), and YaRN's rotation
// amplitude (cos and sin scaled by it; 1 for DeepSeek's releases).
struct MlaRope {
  const float* inv_freq;  // [r/2]
  int32_t r;
  bool interleave;
  float amplitude;
};

// The sizes, for host and device code (this header includes no CUDA header).
#if defined(__CUDACC__)
#define DSV4_MLA_HD __host__ __device__
#else
#define DSV4_MLA_HD
#endif
struct MlaDimsDev {
  int64_t heads, c, dn, dr, dv;  // H, kv_lora_rank, qk_nope, qk_rope, v_head_dim
  DSV4_MLA_HD int64_t dq() const { return dn + dr; }  // query / key width per head
  DSV4_MLA_HD int64_t lw() const { return c + dr; }   // cached values per position
  DSV4_MLA_HD int64_t kv() const { return dn + dv; }  // kv_b_proj rows per head
};
#undef DSV4_MLA_HD

// Rotates the last r dims of each head of v [T, heads, width] at rows[t].pos.
void mla_rope(float* v, const RowInfo* rows, int64_t t, int64_t heads, int64_t width, MlaRope rope, void* s);
// latent cache of rows[t].seq at rows[t].pos = a[t] (a [T, c + dr], normed and roped).
void mla_store(const float* a, const RowInfo* rows, const SeqLayerState* seqs, int64_t t, int64_t lw, void* s);
// ql [T, H, c + dr]: per head, W_k,h^T q_nope (c values; zero when dn = 0), then q_rope copied;
// q [T, H, dn + dr], wkv_b [H (dn + dv), c] as stored.
void mla_absorb_query(const float* q, const MatrixView& wkv_b, int64_t t, const MlaDimsDev& d, float* ql, void* s);
// ol [T, H, c] = sum over the positions p <= rows[t].pos of softmax(scale ql . cache_p) l_p.
// max_keys: the most positions any row sees (sizes shared memory; mla_attend_smem says how much).
int64_t mla_attend_smem(const MlaDimsDev& d, int64_t max_keys);
void mla_attend(const float* ql, const RowInfo* rows, const SeqLayerState* seqs, int64_t t, const MlaDimsDev& d,
                int64_t max_keys, float scale, float* ol, void* s);
// o [T, H, dv] = W_v,h ol_h per head (ol [T, H, c]; W_v,h the head's dv value rows of wkv_b).
void mla_values(const float* ol, const MatrixView& wkv_b, int64_t t, const MlaDimsDev& d, float* o, void* s);

}  // namespace dsv4::cuda::k
