#pragma once
// Launchers of the CUDA backend's kernels (src/cuda/kernels.cu), callable from plain C++: raw
// device pointers, sizes, and the stream as void* (a cudaStream_t). Every launcher enqueues work on
// the stream and returns; none synchronizes. Row metadata (RowInfo) lives on the device, so one
// launch covers a whole batch of sequences.
#include <cstdint>

#include "dsv4/cuda/gemv.hpp"

namespace dsv4::cuda::k {

// Per token row of a forward: which sequence it continues and where.
struct RowInfo {
  int32_t seq;    // index into the batch's per-sequence tables
  int32_t pos;    // absolute position
  int32_t row0;   // first row of its segment
  int32_t pos0;   // position of that first row
  int32_t count;  // rows in the segment
};

// Per sequence device state of one attention layer (pointers into a DeviceCache).
struct SeqLayerState {
  float* ring;       // [W-1, d]
  float* entries;    // [capacity / m, d] compressed kv entries
  float* pend_a;     // [m, pw]
  float* pend_z;     // [m, pw]
  float* prev_a;     // [m, c] (overlapping compressors)
  float* prev_z;     // [m, c]
  float* ientries;   // CSA indexer keys [capacity / m, c_I]
  float* ipend_a;
  float* ipend_z;
  float* iprev_a;
  float* iprev_z;
  float* latent;     // MLA (src/cuda/mla.hpp): [max_context, c + dr] latent cache
};

// One window that completes in this forward: (sequence, window index, row of its segment start);
// window -1 is a placeholder that does nothing (fixed-size job lists of captured decode steps).
struct CompressJob {
  int32_t seq, window, row0, pos0;
};

struct Rope {
  const float* inv_freq;  // [r/2]
  int32_t r;
};

// x [T, n, D]: every stream = decoded embedding row tokens[t].
void embed(const MatrixView& e, const int32_t* tokens, int64_t t, int64_t n, float* x, void* s);
// y[t] = x[t] * rsqrt(mean(x[t]^2) + eps) (* w), rows of width `width` with stride ld; in place ok.
void rms_norm_rows(const float* x, const float* w, int64_t t, int64_t width, int64_t ld, float eps, float* y, void* s);
// mHC (src/cuda/fused.cu), two launches per residual update of x [T, n, D]:
// hc_post_mix: when post != null, x <- post_j y + sum_i comb[i][j] X_i (post [T, n], comb [T, n, n],
// y [T, D]); then, when fn != null, per token and chunk of columns the partial sums of the next
// mixes: part [T, hc_chunks(D), fn.n + 1] (fn_r . X for the fn [nm, n D] rows, then sum X^2).
constexpr int kHcMaxMix = (2 + 16) * 16;
int64_t hc_chunks(int64_t D);
void hc_post_mix(const float* post, const float* comb, const float* y, float* x, int64_t t, int64_t n, int64_t D,
                 const MatrixView* fn, float* part, void* s);
// hc_finish: from part, the mixes m of the unweighted-RMS-normed X: pre/post [T, n] and comb
// [T, n, n] (softmax + Sinkhorn), or with post == null the hyper head's pre only; then
// out [T, D] = rms_norm(sum_i pre_i X_i) * w.
// chunks: part's chunk count (0: hc_chunks(D); 1 after hc_update_rows and a GEMM of the mixes).
void hc_finish(const float* part, const float* base, const float* scale, const float* x, int64_t t, int64_t n,
               int64_t D, int64_t iters, float hc_eps, float norm_eps, float* pre, float* post, float* comb,
               const float* w, float* out, void* s, int64_t chunks = 0);
// Many rows (fast-mode prefill): the residual update alone (post != null) and, with part, each row's
// sum of the new X^2 into part[t * ld + ld - 1]; the mixes themselves come from a GEMM of fn and x
// into part [T, ld] (one chunk). One block per row, every column of every stream read once.
void hc_update_rows(const float* post, const float* comb, const float* y, float* x, int64_t t, int64_t n, int64_t D,
                    float* part, int64_t ld, void* s);
// Per row r and head h of v [T, heads, width]: optional unweighted RMS norm, then rope at rows[r].pos.
void norm_rope_heads(float* v, const RowInfo* rows, int64_t t, int64_t heads, int64_t width, bool norm, float eps,
                     Rope rope, void* s);
// v [t, width] <- rope(rms_norm(v) * w) in one launch: rms_norm_rows then norm_rope_heads (one head,
// no second norm), the same values bit for bit.
void rms_norm_rope_rows(float* v, const float* w, const RowInfo* rows, int64_t t, int64_t width, float eps, Rope rope,
                        void* s);
// z [T, w] += ape[pos mod m].
void add_ape(float* z, const float* ape, const RowInfo* rows, int64_t t, int64_t w, int64_t m, void* s);
void scale(float* v, int64_t n, float f, void* s);

// Attention of every row over its sliding window + extra keys, with sinks, de-rotated.
// q [T, H, d], kv [T, d]; extra keys per row: hca_m > 0: entries [0, (pos+1)/m) of the sequence;
// chosen != null: chosen[row, 0..nchosen[row]) entry indices. o [T, H, d].
struct AttendArgs {
  const float* q;
  const float* kv;
  const RowInfo* rows;
  const SeqLayerState* seqs;
  const float* sink;
  int64_t t, heads, d, window;
  int64_t hca_m;            // HCA ratio, else 0
  const int32_t* chosen;    // CSA: [T, topk]
  const int32_t* nchosen;   // CSA: [T]
  int64_t topk;
  int64_t max_keys;         // most keys any row sees (sizes shared memory)
  float scale;
  Rope rope;
  float* o;                 // [T, H, d]
};
void attend(const AttendArgs& a, void* s);
// The same split over the keys (src/cuda/fused.cu), for few rows: blocks of 16 keys x 4 heads write
// partial softmax sums, part_o [T, chunks, H, d] and part_ml [T, chunks, H, 2], which a second launch
// merges. attend_split_ok: d a multiple of 4 and the partial buffers small (T <= 64). The merge also
// does window_store's work (the keys are all read by then), saving that launch.
bool attend_split_ok(const AttendArgs& a);
int64_t attend_split_chunks(const AttendArgs& a);
void attend_split(const AttendArgs& a, float* part_o, float* part_ml, void* s);
// Fast-mode attention of many rows on the tensor cores (src/cuda/prefill.cu): a block per (row, 64
// heads), tiles of 32 keys, f16 q and keys, fp32 logits and sums, online softmax with the sink.
// attend_tc_ok: d a multiple of 4, at most 512, d - rope even, and the shared memory fits.
bool attend_tc_ok(const AttendArgs& a);
void attend_tc(const AttendArgs& a, void* s);
// ring[(pos) mod (W-1)] = kv[row] for each segment's last W-1 rows.
void window_store(const float* kv, const RowInfo* rows, const SeqLayerState* seqs, int64_t t, int64_t d,
                  int64_t window, void* s);

// Compressor, after the projections a, z [T, pw] (z with ape): one entry per job, then the state.
struct CompressArgs {
  const float* a;
  const float* z;
  const SeqLayerState* seqs;
  bool indexer;   // use the i* fields of SeqLayerState
  bool overlap;
  int64_t m, c;   // ratio, entry width (pw = overlap ? 2c : c)
  const float* norm;  // [c]
  float eps;
  Rope rope;
};
void compress_entries(const CompressArgs& a, const CompressJob* jobs, int64_t njobs, void* s);
// After compress_entries: prev halves (of each segment's last completed window), then pend rows.
// segs [nsegs]: the RowInfo of each segment's first row.
void compress_update_state(const CompressArgs& a, const RowInfo* segs, int64_t nsegs, void* s);

// Lightning Indexer: scores of the visible entries for each row, top-k (ties to the lower index;
// a row with at most top-k visible entries takes them all and is not scored).
// q [T, nh, ci] roped, g [T, nh] (already / sqrt(nh)); scores: scratch [T, max_visible].
void indexer_topk(const float* q, const float* g, const RowInfo* rows, const SeqLayerState* seqs, int64_t t,
                  int64_t nh, int64_t ci, int64_t m, int64_t topk, int64_t max_visible, float* scores, int32_t* chosen,
                  int32_t* nchosen, void* s);
// Shared memory of the scores kernel's block (the row's query, all nh heads of ci dims, and gains).
int64_t indexer_scores_smem(int64_t nh, int64_t ci);
// The top-k part alone: scores [t, ld] (row r's first (pos + 1) / m <= ld visible) -> chosen
// [t, topk] (ascending index) and nchosen [t].
void indexer_select(const float* scores, int64_t ld, const RowInfo* rows, int64_t t, int64_t m, int64_t topk,
                    int32_t* chosen, int32_t* nchosen, void* s);

// MoE routing: logits [T, E] -> experts [T, k], weights [T, k] (sqrt-softplus scores; hash table
// [vocab, k] when given, else top-k of score + bias).
void route(const float* logits, const int32_t* tokens, const int32_t* hash_table, const float* bias, int64_t t,
           int64_t E, int64_t k, float scaling, int32_t* experts, float* weights, void* s);
// act [T, I] = silu(min(g, L)) * clamp(u, -L, L) (L <= 0: no clamp).
void swiglu(const float* g, const float* u, int64_t n, float limit, float* act, void* s);
// Expert GEMV for slots: y[slot] = W_{experts[slot]} x[slot / x_div]; mats [E] on the device, all
// of one kind (and FP8 column block bn).
void expert_gemv(const MatrixView* mats, int kind, int64_t bn, int64_t n, int64_t k, const int32_t* experts,
                 int64_t slots, const float* x, int64_t x_div, float* y, void* s);
// Decode of the routed experts grouped by expert (src/cuda/gemv.cu): each expert's weights are read
// once per two of its slots instead of once per slot. group_experts (one block): pos_of [slots], the
// grouped row of each slot (slots sorted by expert, stably), and jobs [slots, 4]: per expert, its
// slots two at a time as (expert, grouped row of the first, x rows slot / x_div of the first and the
// second, -1 when alone); the jobs past the last are (-1, 0, 0, -1). group_experts_ok: the sizes fit
// its shared memory.
bool group_experts_ok(int64_t slots, int64_t E);
void group_experts(const int32_t* experts, int64_t slots, int64_t E, int64_t x_div, int32_t* pos_of, int32_t* jobs,
                   void* s);
// expert_jobs_ok: the matrices of this kind / column block / K take the tensor-core job path.
bool expert_jobs_ok(int kind, int64_t bn, int64_t k);
// Per job: y [grouped rows, n] = W_expert x, x rows at the job's slot rows (x_by_slot: x [tokens, k])
// or at its grouped rows (x [slots, k]); with mats2, also y2 = W2_expert x in the same launch.
void expert_gemv_jobs(const MatrixView* mats, float* y, const MatrixView* mats2, float* y2, int kind, int64_t n,
                      int64_t k, const int32_t* jobs, int64_t njobs, const float* x, bool x_by_slot, void* s);
// The BF16 head on the tensor cores (a cuBLAS GEMM of x split exactly into three BF16 parts):
// parts [3, rows, cols] = hi, mid, lo with x = hi + mid + lo (to fp32's precision); then
// y [rows, cols] = (c[2] + c[1]) + c[0] from c [3, rows, cols], the GEMM's three products.
void split_bf16x3(const float* x, int64_t rows, int64_t cols, uint16_t* parts, void* s);
void sum_parts3(const float* c, int64_t rows, int64_t cols, float* y, void* s);
// ids [rows] = the index of the largest of each row of x [rows, cols] (ties to the lowest index, NaN
// ignored, 0 when none is a number, as dsv4::argmax); part [rows, argmax_chunks(cols)] scratch.
int64_t argmax_chunks(int64_t cols);
void argmax_rows(const float* x, int64_t rows, int64_t cols, float* part_v, int32_t* part_i, int32_t* ids, void* s);
// out [T, D] += sum_j weights[t, j] y[t*k + j].
void combine(const float* y, const float* weights, int64_t t, int64_t k, int64_t D, float* out, void* s);

// The BF16 tensor-core path (prefill in fast mode).
// out [rows, cols] = bf16(x) (x rows of stride ldx); with lo, also lo = bf16(x - out), so that
// out + lo holds x to about 16 significant bits.
void to_bf16(const float* x, int64_t rows, int64_t cols, int64_t ldx, uint16_t* out, uint16_t* lo, void* s);
// out [count, n, k] = bf16 of matrices mats[which[i]] (device arrays), or of rows [row0, row0 + n) of
// the one matrix `one` when mats is null (count 1). Exact for FP8/FP4/BF16 weights.
// kind / bn: the matrices' storage (all alike), for the vectorized path.
void dequant_bf16(const MatrixView* mats, const int32_t* which, int64_t count, const MatrixView& one, int64_t row0,
                  int64_t n, int64_t k, uint16_t* out, void* s, int kind, int64_t bn);
// Groups the T*k routing slots by expert: counts [E], offsets [E+1], pos_of [slots] (the grouped
// position of each slot; within an expert in no fixed order: every consumer computes each grouped
// row on its own, so results do not depend on it).
void group_slots(const int32_t* experts, int64_t slots, int64_t E, int32_t* counts, int32_t* offsets, int32_t* pos_of,
                 void* s);
// out [T, D] += sum_j weights[t, j] yg[pos_of[t*k + j]].
void combine_grouped(const float* yg, const int32_t* pos_of, const float* weights, int64_t t, int64_t k, int64_t D,
                     float* out, void* s);

// Fast-mode routed experts as one grouped GEMM (src/cuda/prefill.cu), no host round trip: after
// group_slots, moe_tiles cuts each expert's grouped rows into tiles of 64 (tiles [max_tiles, 4]:
// expert, first grouped row, rows, 0; expert -1 past the last); moe_split writes x's rows as BF16
// hi + lo at their grouped rows (dst_of [rows], or null: row i to row i), x row i / div, columns
// padded with zeros to moe_kpad(cols): hi, lo [rows, moe_kpad(cols)]; moe_gemm: per tile,
// y [grouped rows, n] = (hi + lo) W_e^T for W_e = mats0[e] [n, k] (and y1 with mats1 in the same
// launch), fp32 accumulation. fp4 (moe_fp4_ok): packed E2M1 decoded in shared memory; otherwise any
// stored format through the scalar decode.
int64_t moe_max_tiles(int64_t slots, int64_t E);
int64_t moe_kpad(int64_t k);
void moe_tiles(const int32_t* offsets, int64_t E, int64_t max_tiles, int32_t* tiles, void* s);
void moe_split(const float* x, int64_t ldx, const int32_t* dst_of, int64_t rows, int64_t div, int64_t cols,
               uint16_t* hi, uint16_t* lo, void* s);
bool moe_fp4_ok(int kind, int64_t group, int64_t k);
void moe_gemm(const MatrixView* mats0, float* y0, const MatrixView* mats1, float* y1, bool fp4, int64_t n, int64_t k,
              const int32_t* tiles, int64_t max_tiles, const uint16_t* xh, const uint16_t* xl, void* s);

// Expert parallelism (src/cuda/split.cu). localize_slots: experts [n] (global ids) -> this rank's
// local ids for its block [first, first + count), every other slot to the extra bucket `count` with
// its weight [n] set to 0. drop_bucket: the jobs or tiles rows4 [n, 4] of expert `bucket` become
// "no job" (-1), so the extra bucket costs no weight pass. sum_ranks: out [n] = the sum over ranks of
// parts [ranks, n], in rank order (every rank computes bit-identical values).
void localize_slots(int32_t* experts, float* weights, int64_t n, int64_t first, int64_t count, void* s);
void drop_bucket(int32_t* rows4, int64_t n, int64_t bucket, void* s);
void sum_ranks(const float* parts, int64_t ranks, int64_t n, float* out, void* s);

}  // namespace dsv4::cuda::k
