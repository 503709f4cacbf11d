// DeviceModel: the weights uploaded once, per-sequence device caches, and the forward pass as a
// sequence of kernel launches on one stream (kernels.hpp). The order of operations is
// Model::forward's; the host only prepares the row metadata of a batch (one upload) and reads back
// the wanted logits (one download).
#include "dsv4/cuda/device_model.hpp"
#include "dsv4/cuda/device_communicator.hpp"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "dsv4/model/active_bytes.hpp"
#include "cuda_check.hpp"
#include "group_route.hpp"
#include "kernels.hpp"
#include "mla.hpp"

namespace dsv4::cuda {

namespace {

// A device allocation of n T's (uninitialized), movable.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (n) check(cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(T)), "device allocation");
  }
  DeviceBuffer(const T* host, size_t n) : DeviceBuffer(n) {
    if (n) check(cudaMemcpy(p_, host, n * sizeof(T), cudaMemcpyHostToDevice), "upload");
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.data(), host.size()) {}
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(p_, o.p_), std::swap(n_, o.n_);
    return *this;
  }
  ~DeviceBuffer() {
    if (p_) cudaFree(p_);
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

using Floats = DeviceBuffer<float>;
using Mat = std::unique_ptr<DeviceMatrix>;

Mat upload(const Matrix& m) { return std::make_unique<DeviceMatrix>(view_of(m)); }

struct DevLatent {
  Mat wq_a, wq_b, wkv, wo_a, wo_b;
  Floats q_norm, kv_norm, sink;
};

// DeepSeek-V3's multi-head latent attention (spec MLA.md).
struct DevMla {
  Mat wq, wq_a, wq_b, wkv_a, wkv_b, wo;  // wq when q_lora_rank is 0, else wq_a and wq_b
  Floats q_norm, kv_norm;
};

struct DevCompressor {
  int64_t ratio = 0, width = 0;
  bool overlap = false;
  Mat wkv, wgate;
  Floats ape, norm;
  int64_t proj_width() const { return overlap ? 2 * width : width; }
};

struct DevHc {
  Mat fn;
  Floats base, scale;
};

struct DevExpertSet {
  std::vector<Mat> w1, w2, w3;
  DeviceBuffer<MatrixView> v1, v2, v3;  // [E] views of the device matrices, indexed by expert id
  int kind1 = 0, kind2 = 0, kind3 = 0;
};

struct DevLayer {
  AttentionKind kind = AttentionKind::Sliding;
  DevHc hc_attn, hc_ffn;
  Floats attn_norm, ffn_norm;
  DevLatent lat;
  DevMla mla;                         // MLA (DeepSeek-V3)
  DevCompressor comp;                 // CSA, HCA
  Mat iwq_b, iweights_proj;           // CSA indexer
  DevCompressor icomp;
  // MoE
  Mat gate;
  DeviceBuffer<int32_t> hash;         // [vocab, k] for hash-routed layers
  Floats bias;                        // [E] top-k and group-limited layers
  DevExpertSet experts;               // empty in a dense MLP layer
  // The shared expert (null if none); a dense MLP layer (DeepSeek-V3's first layers, no gate) holds
  // its MLP here: the same function of another width.
  Mat sw1, sw2, sw3;
  // Split: this rank holds routed experts [first_expert, first_expert + local_experts); its views
  // end with one more entry (a copy of its first expert's) for the bucket of the other ranks' slots.
  int64_t first_expert = 0, local_experts = 0;
};

DevLatent upload_latent(const LatentWeights& w) {
  return {upload(w.wq_a), upload(w.wq_b), upload(w.wkv), upload(w.wo_a), upload(w.wo_b),
          Floats(w.q_norm), Floats(w.kv_norm), Floats(w.sink)};
}

DevCompressor upload_compressor(const CompressorWeights& w) {
  DevCompressor c;
  c.ratio = w.ratio, c.width = w.width, c.overlap = w.overlap;
  c.wkv = upload(w.wkv), c.wgate = upload(w.wgate);
  c.ape = Floats(w.ape), c.norm = Floats(w.norm);
  return c;
}

DevHc upload_hc(const ResidualVariant& r) {
  const auto& hc = std::get<HyperConnection>(r);
  return {upload(hc.fn), Floats(hc.base), Floats(hc.scale)};
}

int expert_kind(const std::vector<Mat>& ms, const char* what) {
  const int kind = ms.empty() ? 0 : ms[0]->view().kind;
  for (auto& m : ms)
    if (m->view().kind != kind || m->view().bn != ms[0]->view().bn)
      fail("cuda: routed experts' ", what, " matrices mix storage formats");
  return kind;
}
int64_t expert_bn(const std::vector<Mat>& ms) { return ms.empty() ? 128 : ms[0]->view().bn; }
// The experts' matrices (all of one format) take the grouped tensor-core GEMV (FP4 in groups of 32).
bool jobs_ok(const std::vector<Mat>& ms, int64_t k) {
  const MatrixView& v = ms[0]->view();
  return (v.kind != MatrixView::Fp4Group || v.group == 32) && k::expert_jobs_ok(v.kind, v.bn, k);
}

DeviceBuffer<MatrixView> views(const std::vector<Mat>& ms) {
  std::vector<MatrixView> v;
  for (auto& m : ms) v.push_back(m->view());
  return DeviceBuffer<MatrixView>(v);
}

// What a layer's compressor state needs, per sequence (floats).
struct StateSizes {
  int64_t ring = 0, entries = 0, pend = 0, prev = 0, ientries = 0, ipend = 0, iprev = 0, latent = 0;
  // Points st's pieces into storage from base, in order, each 16-byte aligned (the tensor-core
  // attention copies keys 16 bytes at a time); returns the floats they take. base null: only
  // the count (st's pointers stay null).
  int64_t lay_out(float* base, k::SeqLayerState& st) const {
    int64_t at = 0;
    auto take = [&](int64_t n) {
      float* r = n && base ? base + at : nullptr;
      at += (n + 3) / 4 * 4;
      return r;
    };
    st.ring = take(ring);
    st.entries = take(entries);
    st.pend_a = take(pend), st.pend_z = take(pend);
    st.prev_a = take(prev), st.prev_z = take(prev);
    st.ientries = take(ientries);
    st.ipend_a = take(ipend), st.ipend_z = take(ipend);
    st.iprev_a = take(iprev), st.iprev_z = take(iprev);
    st.latent = take(latent);
    return at;
  }
};

}  // namespace

struct DeviceCache::Impl {
  const DeviceModel* owner = nullptr;
  int64_t pos = 0;
  Floats storage;
  std::vector<k::SeqLayerState> layers;  // pointers into storage
};

DeviceCache::DeviceCache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeviceCache::DeviceCache(DeviceCache&&) noexcept = default;
DeviceCache& DeviceCache::operator=(DeviceCache&&) noexcept = default;
DeviceCache::~DeviceCache() = default;
int64_t DeviceCache::position() const { return impl_->pos; }
int64_t DeviceCache::device_bytes() const { return int64_t(impl_->storage.size() * sizeof(float)); }

struct DeviceModel::Impl {
  ModelConfig config;
  DeviceOptions options;
  cudaStream_t stream = nullptr;
  Mat embed, head;
  Floats norm;
  DevHc hc_head;
  Floats rope_main, rope_compress;  // inv_freq [r/2]
  // DeepSeek-V3 (plain residual, MLA layers): its rope table and final norm; no mHC.
  bool plain = false;
  Floats rope_mla;  // inv_freq [dr/2]
  k::MlaRope mla_rope{};
  k::MlaDimsDev mla_dims() const {
    return {config.num_heads, config.kv_lora_rank, config.qk_nope_head_dim, config.rope_dim, config.v_head_dim};
  }
  std::vector<DevLayer> layers;
  std::vector<StateSizes> state_sizes;
  int64_t weight_bytes = 0, active_bytes = 0;
  bool has_indexer = false;  // a layer with a Lightning Indexer
  // Split over ranks (expert parallelism): the device collective, and each rank's head block.
  DeviceCommunicator* comm = nullptr;
  bool split = false;
  std::vector<int64_t> head_firsts;  // [ranks + 1] first vocabulary row of each rank's block
  int64_t head_most = 0;             // rows of the largest block (the gather's stride)

  // Workspace, grown to the largest batch seen. Every reallocation bumps `generation`, which
  // invalidates captured decode graphs (they hold the old addresses).
  int64_t generation = 0;
  std::map<std::string, Floats> ws;
  DeviceBuffer<int32_t> chosen, nchosen, experts;
  float* buf(const std::string& name, int64_t n) {
    Floats& b = ws[name];
    if (int64_t(b.size()) < n) b = Floats(size_t(n)), ++generation;
    return b.get();
  }
  template <class T>
  T* grow(DeviceBuffer<T>& b, int64_t n) {
    if (int64_t(b.size()) < n) b = DeviceBuffer<T>(size_t(n)), ++generation;
    return b.get();
  }
  // The batch's row metadata, packed in pinned host memory and copied up in one transfer (a node of
  // a captured graph, so that replays copy the current step's values); the logits come back the same way.
  char* stage_host = nullptr;
  size_t stage_cap = 0;
  DeviceBuffer<char> stage_dev;
  float* logits_host = nullptr;
  size_t logits_cap = 0;
  int32_t* ids_host = nullptr;  // greedy forwards: each wanted row's argmax
  size_t ids_cap = 0;
  DeviceBuffer<int32_t> ids_dev, argmax_i, expert_jobs;
  DeviceBuffer<char> blas_workspace;  // cuBLAS's own (it allocates none, so captured GEMMs are safe)
  // Captured decode steps, by batch size and greedy (2 B + 1) or not (2 B): a step of one token per
  // sequence is replayed as a graph.
  struct Graph {
    cudaGraphExec_t exec = nullptr;
    int64_t generation = -1;
    bool warm = false;  // one uncaptured step ran at this size (it allocated the workspace)
  };
  std::map<int64_t, Graph> graphs;

  // DSV4_CUDA_PROFILE=1: device time per part of the forward (events between marks), summed over
  // forwards and printed to stderr when the model is destroyed.
  bool profile = false;
  std::vector<cudaEvent_t> event_pool;
  std::vector<std::pair<const char*, cudaEvent_t>> marks;
  std::map<std::string, double> profile_ms;
  void mark(const char* part) {
    if (!profile) return;
    if (marks.size() >= event_pool.size()) {
      cudaEvent_t e;
      check(cudaEventCreate(&e), "profile event");
      event_pool.push_back(e);
    }
    cudaEvent_t e = event_pool[marks.size()];
    check(cudaEventRecord(e, stream), "profile event");
    marks.push_back({part, e});
  }
  void collect_marks() {  // after the stream synchronized: time from each mark to the next
    for (size_t i = 0; i + 1 < marks.size(); ++i) {
      float ms = 0;
      check(cudaEventElapsedTime(&ms, marks[i].second, marks[i + 1].second), "profile event");
      profile_ms[marks[i].first] += ms;
    }
    marks.clear();
  }

  k::Rope rope_of(AttentionKind kind) const {
    return {kind == AttentionKind::Sliding ? rope_main.get() : rope_compress.get(), int32_t(config.rope_dim)};
  }

  // Fast mode runs forwards of this many rows or more as BF16 tensor-core GEMMs.
  static constexpr int64_t kGemmRows = 32;
  // Fast mode takes the mHC mixes as a GEMM from this many rows (hc_update_rows + cuBLAS SGEMM).
  static constexpr int64_t kHcGemmRows = 128;
  cublasHandle_t blas = nullptr;
  DeviceBuffer<uint16_t> wbf, xbf, xlo;
  DeviceBuffer<int32_t> counts, offsets, pos_of, which;  // which: the expert GEMM tiles
  // FP8 with f32 block scales (DeepSeek-V3's weight_scale_inv) stays on the fp32 GEMVs: E4M3 times
  // an arbitrary f32 scale is no BF16 value, and the rounded weights moved V3's fast-mode logits by
  // up to 1.7 on the H200 (router choices flip); E8M0 scales (V4) decode to BF16 exactly.
  bool use_gemm(const DeviceMatrix& w, int64_t t) const {
    const MatrixView& v = w.view();
    return options.mode == KernelMode::Fast && t >= kGemmRows && v.kind != MatrixView::F32 &&
           !(v.kind == MatrixView::Fp8Block && v.scale_is_f32);
  }
  // y [t, n] (row stride ldy) = W [n, K] (x + xlo) [t, K]^T: BF16 operands, fp32 accumulation; the
  // activations as the sum of two BF16 parts (two GEMMs into one result) keep ~16 significant bits.
  void gemm_bf16(const uint16_t* w, int64_t n, int64_t K, const uint16_t* x, const uint16_t* xlo, int64_t t, float* y,
                 int64_t ldy) const {
    const float one = 1.f, zero = 0.f;
    for (int part = 0; part < 2; ++part) {
      const cublasStatus_t st = cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(t), int(K), &one, w, CUDA_R_16BF,
                                             int(K), part ? xlo : x, CUDA_R_16BF, int(K), part ? &one : &zero, y,
                                             CUDA_R_32F, int(ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
      if (st != CUBLAS_STATUS_SUCCESS) fail("cuda: cuBLAS BF16 GEMM ", n, "x", t, "x", K, " failed (status ", int(st), ")");
    }
  }

  // y [t, rows row0..row1) (stride ldy) = W x (x rows of stride ldx).
  void lin_rows(const DeviceMatrix& w, const float* x, int64_t ldx, int64_t t, float* y, int64_t ldy, int64_t row0,
                int64_t row1) {
    if (!use_gemm(w, t)) return gemv(w.view(), x, ldx, t, y, ldy, row0, row1, stream);
    const int64_t n = row1 - row0, K = w.cols();
    uint16_t* wb = grow(wbf, n * K);
    k::dequant_bf16(nullptr, nullptr, 1, w.view(), row0, n, K, wb, stream, w.view().kind, w.view().bn);
    uint16_t* xb = grow(xbf, t * K);
    uint16_t* xl = grow(xlo, t * K);
    k::to_bf16(x, t, K, ldx, xb, xl, stream);
    gemm_bf16(wb, n, K, xb, xl, t, y, ldy);
  }
  void grouped_experts(const DevLayer& Ly, int64_t T, const float* u, const float* wts, float* y);
  void ffn_experts(const DevLayer& Ly, int64_t T, const float* u, const float* wts, float limit, float* y);
  float* forward_plain(int64_t T, const int32_t* tokens, const k::RowInfo* rows, const k::SeqLayerState* states,
                       int64_t B, const std::vector<int64_t>& want, bool all_rows, int64_t max_keys);
  // xs [rows of want, width] <- those rows of x [T, width] (the rows whose logits are wanted).
  float* gather_rows(const float* x, const std::vector<int64_t>& want, int64_t width) {
    float* xs = buf("xs", int64_t(want.size()) * width);
    for (size_t r = 0; r < want.size(); ++r)
      check(cudaMemcpyAsync(xs + int64_t(r) * width, x + want[r] * width, size_t(width) * sizeof(float),
                            cudaMemcpyDeviceToDevice, stream),
            "gather rows");
    return xs;
  }
  // Split: x [n] <- the sum over ranks of x [n] (rank order, the same on every rank).
  void allreduce(float* x, int64_t n) {
    float* all = buf("split_gather", comm->size() * n);
    comm->allgather(x, n, all, stream);
    k::sum_ranks(all, comm->size(), n, x, stream);
  }
  // Split: logits [rows, V] from this rank's head block of h [rows, D] and the other ranks' blocks.
  void head_gather(const float* h, int64_t rows, float* logits) {
    const int64_t V = config.vocab_size, most = head_most, p = comm->size();
    float* part = buf("head_part", rows * most);  // [rows, rows of this rank's block], packed
    float* all = buf("head_all", p * rows * most);
    lin(*head, h, rows, part);
    comm->allgather(part, rows * most, all, stream);
    for (int64_t r = 0; r < p; ++r) {
      const int64_t first = head_firsts[size_t(r)], nr = head_firsts[size_t(r) + 1] - first;
      if (nr > 0)
        check(cudaMemcpy2DAsync(logits + first, size_t(V) * sizeof(float), all + r * rows * most, size_t(nr) * sizeof(float),
                                size_t(nr) * sizeof(float), size_t(rows), cudaMemcpyDeviceToDevice, stream),
              "head gather");
    }
  }
  // BF16 matrices of more than 256 rows (the head, the compressors' projections) at 2..64 rows of x
  // on the tensor cores: x [rows, K] split exactly into three BF16 parts stacked as 3 rows-row
  // matrices, one cuBLAS GEMM (fp32 accumulation; each product exact), the three results summed.
  // The BF16 GEMV is at the copy rate at batch 1, but FMA bound at batch 8 (head 654 us).
  static constexpr int64_t kBf16GemmRows = 64;
  bool bf16_gemm(const DeviceMatrix& w, int64_t rows) const {
    return rows >= 2 && rows <= kBf16GemmRows && w.view().kind == MatrixView::Bf16 && w.rows() > 256 &&
           !use_gemm(w, rows) && !legacy_gemv();
  }
  // y [rows, n] = W x, x [rows, K] contiguous.
  void bf16x3(const DeviceMatrix& w, const float* x, int64_t rows, float* y) {
    const int64_t n = w.rows(), K = w.cols();
    uint16_t* parts = grow(xbf, 3 * rows * K);
    float* c = buf("bf16x3_parts", 3 * rows * n);
    k::split_bf16x3(x, rows, K, parts, stream);
    const float one = 1.f, zero = 0.f;
    const cublasStatus_t st = cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(3 * rows), int(K), &one, w.view().data,
                                           CUDA_R_16BF, int(K), parts, CUDA_R_16BF, int(K), &zero, c, CUDA_R_32F, int(n),
                                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS) fail("cuda: cuBLAS BF16 head GEMM failed (status ", int(st), ")");
    k::sum_parts3(c, rows, n, y, stream);
  }
  // DeepSeek-V3 in fast mode, many rows: y [t, n] = W x with the weights decoded to BF16 exactly and
  // x [t, K] split exactly into three BF16 parts (k::split_bf16x3), three GEMMs into one fp32 result:
  // fp32's precision at the tensor cores' rate, where V4's path keeps ~16 bits (two parts). A
  // precaution for V3's sigmoid group routing, whose scores lie close together; no measurement
  // separates the two yet.
  static constexpr int64_t kExactRows = 4096;  // rows a pass (bounds the parts' buffer)
  void gemm_exact(const DeviceMatrix& w, const float* x, int64_t t, float* y) {
    const int64_t n = w.rows(), K = w.cols();
    const uint16_t* wb = reinterpret_cast<const uint16_t*>(w.view().data);
    if (w.view().kind != MatrixView::Bf16) {
      uint16_t* d = grow(wbf, n * K);
      k::dequant_bf16(nullptr, nullptr, 1, w.view(), 0, n, K, d, stream, w.view().kind, w.view().bn);
      wb = d;
    }
    uint16_t* parts = grow(xbf, 3 * std::min(t, kExactRows) * K);
    const float one = 1.f, zero = 0.f;
    for (int64_t r0 = 0; r0 < t; r0 += kExactRows) {
      const int64_t rows = std::min(kExactRows, t - r0);
      k::split_bf16x3(x + r0 * K, rows, K, parts, stream);  // [3, rows, K]: hi, mid, lo
      for (int part = 0; part < 3; ++part) {
        const cublasStatus_t st = cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(rows), int(K), &one, wb,
                                               CUDA_R_16BF, int(K), parts + part * rows * K, CUDA_R_16BF, int(K),
                                               part ? &one : &zero, y + r0 * n, CUDA_R_32F, int(n), CUBLAS_COMPUTE_32F,
                                               CUBLAS_GEMM_DEFAULT);
        if (st != CUBLAS_STATUS_SUCCESS) fail("cuda: cuBLAS BF16 GEMM ", n, "x", rows, "x", K, " failed (status ", int(st), ")");
      }
    }
  }
  void lin(const DeviceMatrix& w, const float* x, int64_t t, float* y) {
    if (plain && use_gemm(w, t)) return gemm_exact(w, x, t, y);
    if (bf16_gemm(w, t)) return bf16x3(w, x, t, y);
    lin_rows(w, x, w.cols(), t, y, w.rows(), 0, w.rows());
  }
  // ya = A x and yb = B x: one GEMV launch where both take the GEMV path.
  void lin2(const DeviceMatrix& a, float* ya, const DeviceMatrix& b, float* yb, const float* x, int64_t t) {
    if (use_gemm(a, t) || use_gemm(b, t) || bf16_gemm(a, t) || bf16_gemm(b, t) || a.cols() != b.cols())
      return lin(a, x, t, ya), lin(b, x, t, yb);
    gemv_pair(a.view(), ya, a.rows(), b.view(), yb, b.rows(), x, a.cols(), t, stream);
  }
};

namespace {

std::string unsupported(const Model& m, const DeviceOptions& o) {
  const ModelConfig& c = m.config();
  const Distribution& dist = m.distribution();
  if (dist.split() && dist.tensor) return "tensor parallelism (load the model with expert parallelism alone for the GPU)";
  if (dist.split() && !o.comm)
    return "a model split over ranks without a device collective (set DeviceOptions::comm: NcclCommunicator, or "
           "LocalDeviceCommunicator for ranks as threads of one process)";
  if (c.residual == ResidualKind::Plain) {  // DeepSeek-V3: every layer MLA
    if (dist.split()) return "a DeepSeek-V3 model split over ranks";
    if (c.n_experts_per_tok > 64) return "more than 64 routed experts a token";
    for (size_t l = 0; l < c.layers.size(); ++l) {
      if (c.layers[l].attention != AttentionKind::MLA) return "the plain residual without MLA (layer " + std::to_string(l) + ")";
      if (c.layers[l].ffn == FfnKind::Moe && c.layers[l].router != RouterKind::GroupLimited)
        return "an MLA model without the group-limited router (layer " + std::to_string(l) + ")";
    }
    return "";
  }
  for (size_t l = 0; l < c.layers.size(); ++l) {
    if (c.layers[l].attention == AttentionKind::MLA) return "MLA attention (layer " + std::to_string(l) + ")";
    if (c.layers[l].ffn != FfnKind::Moe) return "a dense MLP (layer " + std::to_string(l) + ")";
    if (c.layers[l].router == RouterKind::GroupLimited) return "the group-limited router (layer " + std::to_string(l) + ")";
  }
  if (c.hc_mult > 16) return "hc_mult > 16";
  return "";
}

}  // namespace

// Fast-mode prefill of the routed experts, all on the device: the T*k slots grouped by expert, each
// expert's rows cut into tiles of 64 (k::moe_tiles), one grouped GEMM launch for w1 and w3 together
// and one for w2 (k::moe_gemm: FP4 weights decoded in shared memory per K chunk, activations as
// BF16 hi + lo), the combine in grouped order. Launch sizes depend on T only.
void DeviceModel::Impl::grouped_experts(const DevLayer& Ly, int64_t T, const float* u, const float* wts, float* y) {
  Impl& I = *this;
  const ModelConfig& c = I.config;
  // Split: the rank's experts and one bucket for the other ranks' slots.
  const int64_t E = I.split ? Ly.local_experts + 1 : c.n_routed_experts;
  const int64_t K = c.n_experts_per_tok, D = c.hidden_size, Iw = c.moe_intermediate_size;
  const int64_t slots = T * K;
  cudaStream_t s = I.stream;
  int32_t* counts = I.grow(I.counts, E);
  int32_t* offsets = I.grow(I.offsets, E + 1);
  int32_t* pos_of = I.grow(I.pos_of, slots);
  k::group_slots(I.experts.get(), slots, E, counts, offsets, pos_of, s);
  const int64_t max_tiles = k::moe_max_tiles(slots, E);
  int32_t* tiles = I.grow(I.which, max_tiles * 4);
  k::moe_tiles(offsets, E, max_tiles, tiles, s);
  if (I.split) k::drop_bucket(tiles, max_tiles, E - 1, s);
  const int64_t Dp = k::moe_kpad(D), Ip = k::moe_kpad(Iw);
  uint16_t* xh = I.grow(I.xbf, slots * std::max(Dp, Ip));
  uint16_t* xl = I.grow(I.xlo, slots * std::max(Dp, Ip));
  float* h1 = I.buf("g_h1", slots * Iw);
  float* h3 = I.buf("g_h3", slots * Iw);
  float* yg = I.buf("g_y", slots * D);
  if (I.split) check(cudaMemsetAsync(yg, 0, size_t(slots * D) * sizeof(float), s), "clear");  // the bucket's rows weigh 0
  const DevExpertSet& ex = Ly.experts;
  const MatrixView& v1 = ex.w1[0]->view();
  const MatrixView& v2 = ex.w2[0]->view();
  const bool fp13 = k::moe_fp4_ok(ex.kind1, v1.group, D) && k::moe_fp4_ok(ex.kind3, ex.w3[0]->view().group, D);
  k::moe_split(u, D, pos_of, slots, K, D, xh, xl, s);
  k::moe_gemm(ex.v1.get(), h1, ex.v3.get(), h3, fp13, Iw, D, tiles, max_tiles, xh, xl, s);
  k::swiglu(h1, h3, slots * Iw, float(c.swiglu_limit), h1, s);
  k::moe_split(h1, Iw, nullptr, slots, 1, Iw, xh, xl, s);
  k::moe_gemm(ex.v2.get(), yg, nullptr, nullptr, k::moe_fp4_ok(ex.kind2, v2.group, Iw), D, Iw, tiles, max_tiles, xh, xl, s);
  k::combine_grouped(yg, pos_of, wts, T, K, D, y, s);
}

// Feed-forward after the routing: y [T, D] = the shared expert (or, in a dense MLP layer, the MLP)
// of u [T, D] + the routed experts I.experts [T, k] weighted by wts [T, k]; act = silu(min(g, limit))
// * clamp(u) (limit <= 0: no clamp). Split: summed over the ranks in MoE layers.
void DeviceModel::Impl::ffn_experts(const DevLayer& Ly, int64_t T, const float* u, const float* wts, float limit,
                                    float* y) {
  Impl& I = *this;
  const ModelConfig& c = I.config;
  cudaStream_t s = I.stream;
  const int64_t D = c.hidden_size, K = c.n_experts_per_tok, Iw = c.moe_intermediate_size;
  const int64_t Eb = I.split ? Ly.local_experts + 1 : c.n_routed_experts;
  const int64_t sI = Ly.sw1 ? Ly.sw1->rows() : 0;
  float* h1 = I.buf("h1", T * std::max(K * Iw, sI));
  float* h3 = I.buf("h3", T * std::max(K * Iw, sI));
  float* ye = I.buf("ye", T * K * D);
  I.mark("moe.shared");
  if (Ly.sw1) {
    I.lin2(*Ly.sw1, h1, *Ly.sw3, h3, u, T);
    k::swiglu(h1, h3, T * sI, limit, h1, s);
    I.lin(*Ly.sw2, h1, T, y);
  } else {
    check(cudaMemsetAsync(y, 0, size_t(T * D) * sizeof(float), s), "clear");
  }
  I.mark("moe.experts");
  const DevExpertSet& ex = Ly.experts;
  const int64_t bn1 = expert_bn(ex.w1), bn2 = expert_bn(ex.w2), bn3 = expert_bn(ex.w3);
  if (ex.w1.empty()) {
    // a dense MLP layer: no routed experts
  } else if (I.use_gemm(*ex.w1[0], T) && !I.plain) {  // (V3: the fp32 paths below, as gemm_exact)
    I.grouped_experts(Ly, T, u, wts, y);
  } else if (T <= 64 && k::group_experts_ok(T * K, Eb) && ex.kind1 == ex.kind3 && bn1 == bn3 &&
             jobs_ok(ex.w1, D) && jobs_ok(ex.w2, Iw)) {
    // Few rows: the slots grouped by expert, one weight pass per two slots of an expert; w1 and
    // w3 in one launch. The activations stay in grouped order until the combine.
    int32_t* pos_of = I.grow(I.pos_of, T * K);
    int32_t* jobs = I.grow(I.expert_jobs, T * K * 4);
    k::group_experts(I.experts.get(), T * K, Eb, K, pos_of, jobs, s);
    if (I.split) {  // the bucket's jobs do nothing; its rows of ye weigh 0
      k::drop_bucket(jobs, T * K, Eb - 1, s);
      check(cudaMemsetAsync(ye, 0, size_t(T * K * D) * sizeof(float), s), "clear");
    }
    k::expert_gemv_jobs(ex.v1.get(), h1, ex.v3.get(), h3, ex.kind1, Iw, D, jobs, T * K, u, true, s);
    k::swiglu(h1, h3, T * K * Iw, limit, h1, s);
    k::expert_gemv_jobs(ex.v2.get(), ye, nullptr, nullptr, ex.kind2, D, Iw, jobs, T * K, h1, false, s);
    k::combine_grouped(ye, pos_of, wts, T, K, D, y, s);
  } else {
    k::expert_gemv(ex.v1.get(), ex.kind1, bn1, Iw, D, I.experts.get(), T * K, u, K, h1, s);
    k::expert_gemv(ex.v3.get(), ex.kind3, bn3, Iw, D, I.experts.get(), T * K, u, K, h3, s);
    k::swiglu(h1, h3, T * K * Iw, limit, h1, s);
    k::expert_gemv(ex.v2.get(), ex.kind2, bn2, D, Iw, I.experts.get(), T * K, h1, 1, ye, s);
    k::combine(ye, wts, T, K, D, y, s);
  }
  if (I.split && !ex.w1.empty()) {  // the shares of all ranks (the shared expert's on rank 0)
    I.mark("comm");
    I.allreduce(y, T * D);
  }
}

// DeepSeek-V3's layers (spec MLA.md) over the batch's T rows: the plain pre-norm residual
// x += f(rms(x)), MLA attention over each sequence's latent cache (states [L, B]), dense or MoE
// feed-forward with the group-limited router. Returns h [rows of `want`, D], those rows of x after
// the final norm. max_keys: the most positions a row sees (max_context when captured).
float* DeviceModel::Impl::forward_plain(int64_t T, const int32_t* tokens, const k::RowInfo* rows,
                                       const k::SeqLayerState* states, int64_t B, const std::vector<int64_t>& want,
                                       bool all_rows, int64_t max_keys) {
  Impl& I = *this;
  const ModelConfig& c = I.config;
  cudaStream_t s = I.stream;
  const int64_t D = c.hidden_size, E = c.n_routed_experts, K = c.n_experts_per_tok, R = c.q_lora_rank;
  const float eps = float(c.rms_norm_eps);
  const k::MlaDimsDev md = I.mla_dims();
  const int64_t H = md.heads, dq = md.dq(), lw = md.lw();
  // Scores: (dn + dr)^-0.5, times YaRN's ms(factor, mscale_all_dim)^2 when the config sets it.
  const float scale = float(1.0 / std::sqrt(double(dq)) * mla_score_factor(c.rope_main.yarn));
  float* x = I.buf("x", T * D);   // [T, D] the residual
  float* u = I.buf("u", T * D);   // [T, D] a sub-layer's normed input
  float* y = I.buf("y", T * D);   // [T, D] its output
  float* q = I.buf("q", T * H * dq);        // [T, H, dn + dr]
  float* a = I.buf("kv", T * lw);           // [T, c + dr] this forward's cache rows
  float* ql = I.buf("mla_ql", T * H * lw);  // [T, H, c + dr] absorbed queries
  float* ol = I.buf("mla_ol", T * H * md.c);  // [T, H, c] weighted sums of latents
  float* o = I.buf("o", T * H * md.dv);     // [T, H, dv]
  float* qr = R > 0 ? I.buf("qr", T * R) : nullptr;  // [T, R]
  float* glog = I.buf("gate", T * std::max<int64_t>(E, 1));
  float* wts = I.buf("weights", T * std::max<int64_t>(K, 1));
  I.grow(I.experts, T * std::max<int64_t>(K, 1));
  const float one = 1.f;
  auto add_residual = [&]() {  // x += y
    if (cublasSaxpy(I.blas, int(T * D), &one, y, 1, x, 1) != CUBLAS_STATUS_SUCCESS) fail("cuda: cuBLAS residual add failed");
  };
  I.mark("embed");
  k::embed(I.embed->view(), tokens, T, 1, x, s);
  for (size_t l = 0; l < I.layers.size(); ++l) {
    const DevLayer& Ly = I.layers[l];
    const DevMla& m = Ly.mla;
    const k::SeqLayerState* seqs = states + int64_t(l) * B;
    I.mark("attn.project");
    k::rms_norm_rows(x, Ly.attn_norm.get(), T, D, D, eps, u, s);
    if (m.wq) {
      I.lin2(*m.wq, q, *m.wkv_a, a, u, T);
    } else {
      I.lin2(*m.wq_a, qr, *m.wkv_a, a, u, T);
      k::rms_norm_rows(qr, m.q_norm.get(), T, R, R, eps, qr, s);
      I.lin(*m.wq_b, qr, T, q);
    }
    k::rms_norm_rows(a, m.kv_norm.get(), T, md.c, lw, eps, a, s);  // the latent; k_rope is not normed
    k::mla_rope(q, rows, T, H, dq, I.mla_rope, s);
    k::mla_rope(a, rows, T, 1, lw, I.mla_rope, s);
    k::mla_store(a, rows, seqs, T, lw, s);  // before attending: a chunk's rows see each other
    I.mark("attn.core");
    k::mla_absorb_query(q, m.wkv_b->view(), T, md, ql, s);
    k::mla_attend(ql, rows, seqs, T, md, max_keys, scale, ol, s);
    k::mla_values(ol, m.wkv_b->view(), T, md, o, s);
    I.mark("attn.output");
    I.lin(*m.wo, o, T, y);
    add_residual();
    I.mark("moe.route");
    k::rms_norm_rows(x, Ly.ffn_norm.get(), T, D, D, eps, u, s);
    if (Ly.gate) {
      I.lin(*Ly.gate, u, T, glog);
      k::route_group_limited(glog, Ly.bias.get(), T, E, c.n_group, c.topk_group, K, c.norm_topk_prob,
                             float(c.routed_scaling_factor), I.experts.get(), wts, s);
    }
    I.ffn_experts(Ly, T, u, wts, 0.0f, y);  // V3's experts and dense MLPs have no clamp
    add_residual();
  }
  I.mark("head");
  const int64_t NR = int64_t(want.size());
  float* xs = all_rows ? x : I.gather_rows(x, want, D);
  float* h = I.buf("h", NR * D);
  k::rms_norm_rows(xs, I.norm.get(), NR, D, D, eps, h, s);
  return h;
}

DeviceModel::DeviceModel(const Model& model, DeviceOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& I = *impl_;
  I.config = model.config();
  I.options = options;
  const ModelConfig& c = I.config;
  if (std::string why = unsupported(model, options); !why.empty()) fail("cuda backend: does not run ", why, " yet");
  const Distribution& dist = model.distribution();
  if (options.comm && (options.comm->size() != dist.size() || options.comm->rank() != dist.rank()))
    fail("cuda backend: DeviceOptions::comm is rank ", options.comm->rank(), " of ", options.comm->size(),
         " but the model was loaded as rank ", dist.rank(), " of ", dist.size());
  if (dist.split()) {
    I.comm = options.comm, I.split = true;
    I.head_firsts = model.head_firsts();
    for (size_t r = 0; r + 1 < I.head_firsts.size(); ++r)
      I.head_most = std::max(I.head_most, I.head_firsts[r + 1] - I.head_firsts[r]);
    if (dsv4::rows(model.head()) <= 0)
      fail("cuda backend: rank ", dist.rank(), " of ", dist.size(), " holds no block of the head's vocabulary (",
           c.vocab_size, " rows): use fewer ranks");
  }
  if (options.max_context < 1) fail("cuda backend: max_context must be >= 1");
  if (!device_available()) fail("cuda backend: no CUDA device is available");
  check(cudaStreamCreateWithFlags(&I.stream, cudaStreamNonBlocking), "stream");
  I.blas_workspace = DeviceBuffer<char>(size_t(32) << 20);
  if (cublasCreate(&I.blas) != CUBLAS_STATUS_SUCCESS || cublasSetStream(I.blas, I.stream) != CUBLAS_STATUS_SUCCESS ||
      cublasSetWorkspace(I.blas, I.blas_workspace.get(), I.blas_workspace.size()) != CUBLAS_STATUS_SUCCESS)
    fail("cuda backend: cuBLAS could not be initialized");
  if (const char* p = std::getenv("DSV4_CUDA_PROFILE")) I.profile = std::string(p) == "1";
  I.embed = upload(model.embedding());
  I.head = upload(model.head());
  I.active_bytes = dsv4::active_bytes_per_token(model);
  I.plain = c.residual == ResidualKind::Plain;
  if (I.plain) {
    const RopeTable& r = model.rope(AttentionKind::MLA);
    I.rope_mla = Floats(r.inv_freq());
    I.mla_rope = {I.rope_mla.get(), int32_t(r.dims()), r.interleaved(), r.amplitude()};
  } else {
    I.rope_main = Floats(model.rope(AttentionKind::Sliding).inv_freq());
    I.rope_compress = Floats(model.rope(AttentionKind::CSA).inv_freq());
  }
  for (size_t l = 0; l < model.layers().size(); ++l) {
    const DecoderLayer& L = model.layers()[l];
    DevLayer d;
    d.kind = c.layers[l].attention;
    if (!I.plain) d.hc_attn = upload_hc(L.attn_residual), d.hc_ffn = upload_hc(L.ffn_residual);
    d.attn_norm = Floats(L.attn_norm);
    d.ffn_norm = Floats(L.ffn_norm);
    StateSizes ss;
    if (!I.plain) ss.ring = std::max<int64_t>(c.sliding_window - 1, 0) * c.head_dim;
    std::visit(
        [&](auto& at) {
          using A = std::decay_t<decltype(at)>;
          if constexpr (std::is_same_v<A, MlaAttention>) {
            const MlaWeights& w = at.w;
            if (dsv4::rows(w.wq) > 0) {
              d.mla.wq = upload(w.wq);
            } else {
              d.mla.wq_a = upload(w.wq_a), d.mla.wq_b = upload(w.wq_b);
              d.mla.q_norm = Floats(w.q_norm);
            }
            d.mla.wkv_a = upload(w.wkv_a), d.mla.wkv_b = upload(w.wkv_b), d.mla.wo = upload(w.wo);
            d.mla.kv_norm = Floats(w.kv_norm);
            ss.latent = options.max_context * (c.kv_lora_rank + c.rope_dim);
          } else {
            d.lat = upload_latent(at.latent);
            if constexpr (!std::is_same_v<A, SlidingAttention>) {
              d.comp = upload_compressor(at.compressor);
              ss.entries = (options.max_context / at.compressor.ratio + 1) * at.compressor.width;
              ss.pend = at.compressor.ratio * at.compressor.proj_width();
              ss.prev = at.compressor.overlap ? at.compressor.ratio * at.compressor.width : 0;
            }
            if constexpr (std::is_same_v<A, CsaAttention>) {
              d.iwq_b = upload(at.indexer.wq_b);
              d.iweights_proj = upload(at.indexer.weights_proj);
              d.icomp = upload_compressor(at.indexer.compressor);
              const auto& ic = at.indexer.compressor;
              ss.ientries = (options.max_context / ic.ratio + 1) * ic.width;
              ss.ipend = ic.ratio * ic.proj_width();
              ss.iprev = ic.ratio * ic.width;
              I.has_indexer = true;
            }
          }
        },
        L.attn);
    if (const auto* mlp = std::get_if<DenseMlp>(&L.ffn)) {
      d.sw1 = upload(mlp->w.w1), d.sw2 = upload(mlp->w.w2), d.sw3 = upload(mlp->w.w3);
    } else {
      const auto& moe = std::get<MoeWeights>(L.ffn);
      d.gate = upload(moe.gate);
      if (auto* h = std::get_if<HashRouter>(&moe.router)) d.hash = DeviceBuffer<int32_t>(h->table);
      else if (auto* g = std::get_if<GroupLimitedRouter>(&moe.router)) d.bias = Floats(g->bias);
      else d.bias = Floats(std::get<TopKRouter>(moe.router).bias);
      for (auto& e : moe.experts)
        d.experts.w1.push_back(upload(e.w1)), d.experts.w2.push_back(upload(e.w2)), d.experts.w3.push_back(upload(e.w3));
      d.experts.kind1 = expert_kind(d.experts.w1, "w1");
      d.experts.kind2 = expert_kind(d.experts.w2, "w2");
      d.experts.kind3 = expert_kind(d.experts.w3, "w3");
      if (!I.split) {
        d.experts.v1 = views(d.experts.w1), d.experts.v2 = views(d.experts.w2), d.experts.v3 = views(d.experts.w3);
      } else {
        d.first_expert = moe.first_expert, d.local_experts = int64_t(moe.experts.size());
        if (d.local_experts < 1) fail("cuda backend: rank ", dist.rank(), " holds no routed expert of layer ", l);
        // The bucket of the other ranks' slots: weighs zero; a real matrix for the per-slot GEMV path,
        // which computes every slot (the grouped paths drop the bucket's jobs).
        auto with_bucket = [](const std::vector<Mat>& ms) {
          std::vector<MatrixView> v;
          for (auto& m : ms) v.push_back(m->view());
          v.push_back(ms[0]->view());
          return DeviceBuffer<MatrixView>(v);
        };
        d.experts.v1 = with_bucket(d.experts.w1), d.experts.v2 = with_bucket(d.experts.w2),
        d.experts.v3 = with_bucket(d.experts.w3);
      }
      if (!moe.shared.empty()) d.sw1 = upload(moe.shared[0].w1), d.sw2 = upload(moe.shared[0].w2), d.sw3 = upload(moe.shared[0].w3);
    }
    I.layers.push_back(std::move(d));
    I.state_sizes.push_back(ss);
  }
  // Final norm and hyper head (read again from the mapped checkpoint: Model keeps them private).
  {
    WeightSource ws(model.checkpoint(), c);
    I.norm = Floats(ws.floats("norm.weight", {c.hidden_size}));
    if (!I.plain) {
      const HyperHead hh = HyperHead::load(ws, c);
      I.hc_head = DevHc{upload(hh.fn), Floats(hh.base), Floats(hh.scale)};
    }
  }
  // MLA attention keeps one row's scores over its positions in shared memory: check the context fits.
  if (I.plain) {
    int dev = 0, optin = 0;
    check(cudaGetDevice(&dev), "device");
    check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "device attribute");
    const int64_t need = k::mla_attend_smem(I.mla_dims(), options.max_context) + 1024;  // + its reductions' own
    if (need > optin)
      fail("cuda backend: max_context ", options.max_context, " needs ", need,
           " bytes of shared memory per block for MLA attention; this device has ", optin, " (lower max_context)");
  }
  // The indexer's scores keep a row's query (all its heads) in shared memory.
  if (I.has_indexer) {
    int dev = 0, optin = 0;
    check(cudaGetDevice(&dev), "device");
    check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "device attribute");
    const int64_t need = k::indexer_scores_smem(c.index_n_heads, c.index_head_dim);
    if (need > optin)
      fail("cuda backend: the Lightning Indexer's query (index_n_heads ", c.index_n_heads, " x index_head_dim ",
           c.index_head_dim, ") needs ", need, " bytes of shared memory per block; this device has ", optin);
  }
  size_t free_b = 0, total_b = 0;
  check(cudaMemGetInfo(&free_b, &total_b), "memory info");
  I.weight_bytes = 0;
  auto count = [&](const Mat& m) {
    if (m) I.weight_bytes += m->view().data_bytes + m->view().scale_bytes;
  };
  count(I.embed), count(I.head), count(I.hc_head.fn);
  for (auto& d : I.layers) {
    for (auto* m : {&d.hc_attn.fn, &d.hc_ffn.fn, &d.lat.wq_a, &d.lat.wq_b, &d.lat.wkv, &d.lat.wo_a, &d.lat.wo_b,
                    &d.comp.wkv, &d.comp.wgate, &d.iwq_b, &d.iweights_proj, &d.icomp.wkv, &d.icomp.wgate, &d.gate,
                    &d.sw1, &d.sw2, &d.sw3, &d.mla.wq, &d.mla.wq_a, &d.mla.wq_b, &d.mla.wkv_a, &d.mla.wkv_b, &d.mla.wo})
      count(*m);
    for (auto* v : {&d.experts.w1, &d.experts.w2, &d.experts.w3})
      for (auto& m : *v) count(m);
  }
}

DeviceModel::~DeviceModel() {
  if (!impl_) return;
  if (!impl_->profile_ms.empty()) {
    double total = 0;
    for (auto& [part, ms] : impl_->profile_ms) total += ms;
    std::fprintf(stderr, "[dsv4 cuda profile: device ms per part, all forwards]\n");
    for (auto& [part, ms] : impl_->profile_ms)
      std::fprintf(stderr, "  %-16s %10.3f ms  %5.1f%%\n", part.c_str(), ms, 100.0 * ms / total);
  }
  for (cudaEvent_t e : impl_->event_pool) cudaEventDestroy(e);
  for (auto& [b, g] : impl_->graphs)
    if (g.exec) cudaGraphExecDestroy(g.exec);
  if (impl_->stage_host) cudaFreeHost(impl_->stage_host);
  if (impl_->logits_host) cudaFreeHost(impl_->logits_host);
  if (impl_->ids_host) cudaFreeHost(impl_->ids_host);
  if (impl_->blas) cublasDestroy(impl_->blas);
  if (impl_->stream) cudaStreamDestroy(impl_->stream);
}

std::vector<std::pair<std::string, double>> DeviceModel::take_profile() {
  std::vector<std::pair<std::string, double>> out(impl_->profile_ms.begin(), impl_->profile_ms.end());
  impl_->profile_ms.clear();
  return out;
}

const ModelConfig& DeviceModel::config() const { return impl_->config; }
const DeviceOptions& DeviceModel::options() const { return impl_->options; }
int64_t DeviceModel::weight_bytes() const { return impl_->weight_bytes; }
int64_t DeviceModel::active_bytes_per_token() const { return impl_->active_bytes; }

std::string DeviceModel::device_name() const {
  int dev = 0;
  cudaDeviceProp p{};
  check(cudaGetDevice(&dev), "device");
  check(cudaGetDeviceProperties(&p, dev), "device properties");
  return p.name;
}

DeviceCache DeviceModel::new_cache() const {
  auto impl = std::make_unique<DeviceCache::Impl>();
  impl->owner = this;
  int64_t total = 0;
  for (auto& s : impl_->state_sizes) {
    k::SeqLayerState st{};
    total += s.lay_out(nullptr, st);
  }
  impl->storage = Floats(size_t(std::max<int64_t>(total, 1)));
  check(cudaMemsetAsync(impl->storage.get(), 0, impl->storage.size() * sizeof(float), impl_->stream), "cache clear");
  float* p = impl->storage.get();
  for (auto& s : impl_->state_sizes) {
    k::SeqLayerState st{};
    p += s.lay_out(p, st);
    impl->layers.push_back(st);
  }
  check(cudaStreamSynchronize(impl_->stream), "cache clear");
  return DeviceCache(std::move(impl));
}

void DeviceModel::forward(std::span<const DeviceSequenceInput> batch, std::vector<float>& logits, LogitRows rows) {
  run(batch, &logits, nullptr, rows);
}

void DeviceModel::forward_greedy(std::span<const DeviceSequenceInput> batch, std::vector<int32_t>& next) {
  run(batch, nullptr, &next, LogitRows::Last);
}

void DeviceModel::run(std::span<const DeviceSequenceInput> batch, std::vector<float>* logits, std::vector<int32_t>* ids,
                      LogitRows rows) {
  Impl& I = *impl_;
  const ModelConfig& c = I.config;
  const int64_t n = c.hc_mult, D = c.hidden_size, V = c.vocab_size, H = c.num_heads, d = c.head_dim;
  const float eps = float(c.rms_norm_eps);
  if (batch.empty()) fail("forward: empty batch");
  // Validation first: nothing changes on bad input.
  std::vector<int32_t> tokens;
  std::vector<k::RowInfo> row_info, seg_info;
  int64_t max_end = 0;
  for (size_t b = 0; b < batch.size(); ++b) {
    const DeviceSequenceInput& in = batch[b];
    if (!in.cache || !in.cache->impl_ || in.cache->impl_->owner != this)
      fail("forward: sequence ", b, " has a cache that was not made by this device model");
    for (size_t o = 0; o < b; ++o)
      if (batch[o].cache == in.cache) fail("forward: sequences ", o, " and ", b, " share one cache");
    if (in.tokens.empty()) fail("forward: sequence ", b, " has no tokens (empty prompt)");
    for (size_t i = 0; i < in.tokens.size(); ++i)
      if (in.tokens[i] < 0 || in.tokens[i] >= V)
        fail("forward: sequence ", b, " token ", i, " has id ", in.tokens[i], ", outside the vocabulary [0, ", V, ")");
    const int64_t pos0 = in.cache->impl_->pos, count = int64_t(in.tokens.size());
    if (pos0 + count > I.options.max_context)
      fail("forward: sequence ", b, " would reach ", pos0 + count, " tokens, past the device cache's max_context ",
           I.options.max_context);
    const k::RowInfo first{int32_t(b), int32_t(pos0), int32_t(tokens.size()), int32_t(pos0), int32_t(count)};
    seg_info.push_back(first);
    for (int64_t i = 0; i < count; ++i) {
      k::RowInfo r = first;
      r.pos = int32_t(pos0 + i);
      row_info.push_back(r);
    }
    tokens.insert(tokens.end(), in.tokens.begin(), in.tokens.end());
    max_end = std::max(max_end, pos0 + count);
  }
  const int64_t T = int64_t(tokens.size()), B = int64_t(batch.size()), L = int64_t(I.layers.size());
  const bool fast_mode = I.options.mode == KernelMode::Fast;
  // Several kernels put the rows on grid.y (at most 65535).
  if (T > 65535)
    fail("forward: ", T, " tokens in one call; the CUDA backend takes at most 65535 a call (prefill a longer prompt "
         "in chunks, one forward each)");
  cudaStream_t s = I.stream;

  // A step of one token per sequence is captured as a CUDA graph and replayed: its launches must
  // not depend on the positions, so they are sized for max_context and every sequence gets one
  // compress job per ratio (a placeholder when no window completes).
  bool one_each = true;
  for (auto& sg : seg_info) one_each = one_each && sg.count == 1;
  // (Not the fast GEMM path: its routed experts read counts back to the host mid-forward.)
  // (Split: only where the device collective needs no host rendezvous.)
  const bool graph = I.options.cuda_graphs && one_each && !I.profile &&
                     (I.options.mode == KernelMode::Reference || T < Impl::kGemmRows) &&
                     (!I.split || I.comm->graph_capturable());
  const int64_t kmax_end = graph ? I.options.max_context : max_end;  // what launch sizes assume

  // Per-layer, per-sequence state pointers and the compress jobs of each ratio in use.
  std::vector<k::SeqLayerState> states(size_t(L * B));
  for (int64_t l = 0; l < L; ++l)
    for (int64_t b = 0; b < B; ++b) states[size_t(l * B + b)] = batch[size_t(b)].cache->impl_->layers[size_t(l)];
  std::map<int64_t, std::pair<int64_t, int64_t>> job_range;  // ratio -> [first, count) in jobs
  std::vector<k::CompressJob> jobs;
  for (auto& lay : I.layers)
    for (int64_t m : {lay.comp.ratio, lay.icomp.ratio}) {
      if (m == 0 || job_range.count(m)) continue;
      const int64_t first = int64_t(jobs.size());
      for (auto& sg : seg_info) {
        const size_t before = jobs.size();
        for (int64_t w = sg.pos0 / m; w <= (sg.pos0 + sg.count) / m - 1; ++w)
          jobs.push_back({sg.seq, int32_t(w), sg.row0, sg.pos0});
        if (graph && jobs.size() == before) jobs.push_back({sg.seq, -1, sg.row0, sg.pos0});
      }
      job_range[m] = {first, int64_t(jobs.size()) - first};
    }
  // Pack the metadata into the pinned staging buffer (16-byte aligned sections).
  size_t stage_bytes = 0;
  auto section = [&](size_t bytes) {
    const size_t at = stage_bytes;
    stage_bytes += (bytes + 15) / 16 * 16;
    return at;
  };
  const size_t at_tokens = section(tokens.size() * sizeof(int32_t)), at_rows = section(row_info.size() * sizeof(k::RowInfo)),
               at_segs = section(seg_info.size() * sizeof(k::RowInfo)),
               at_states = section(states.size() * sizeof(k::SeqLayerState)),
               at_jobs = section(std::max<size_t>(jobs.size(), 1) * sizeof(k::CompressJob));
  if (stage_bytes > I.stage_cap) {
    if (I.stage_host) cudaFreeHost(I.stage_host);
    I.stage_host = nullptr;
    check(cudaMallocHost(reinterpret_cast<void**>(&I.stage_host), stage_bytes), "pinned staging");
    I.stage_cap = stage_bytes;
    ++I.generation;
  }
  I.grow(I.stage_dev, int64_t(stage_bytes));
  std::memcpy(I.stage_host + at_tokens, tokens.data(), tokens.size() * sizeof(int32_t));
  std::memcpy(I.stage_host + at_rows, row_info.data(), row_info.size() * sizeof(k::RowInfo));
  std::memcpy(I.stage_host + at_segs, seg_info.data(), seg_info.size() * sizeof(k::RowInfo));
  std::memcpy(I.stage_host + at_states, states.data(), states.size() * sizeof(k::SeqLayerState));
  if (!jobs.empty()) std::memcpy(I.stage_host + at_jobs, jobs.data(), jobs.size() * sizeof(k::CompressJob));
  char* const dev = I.stage_dev.get();
  const int32_t* d_tokens = reinterpret_cast<const int32_t*>(dev + at_tokens);
  const k::RowInfo* d_rows = reinterpret_cast<const k::RowInfo*>(dev + at_rows);
  const k::RowInfo* d_segs = reinterpret_cast<const k::RowInfo*>(dev + at_segs);
  const k::SeqLayerState* d_states = reinterpret_cast<const k::SeqLayerState*>(dev + at_states);
  const k::CompressJob* d_jobs = reinterpret_cast<const k::CompressJob*>(dev + at_jobs);

  // The rows whose logits are wanted.
  std::vector<int64_t> want;
  if (rows == LogitRows::All)
    for (int64_t i = 0; i < T; ++i) want.push_back(i);
  else
    for (auto& sg : seg_info) want.push_back(sg.row0 + sg.count - 1);
  const int64_t NR = int64_t(want.size());
  bool all_rows = NR == T;
  for (int64_t r = 0; all_rows && r < NR; ++r) all_rows = want[size_t(r)] == r;
  if (ids && size_t(NR) > I.ids_cap) {
    if (I.ids_host) cudaFreeHost(I.ids_host);
    I.ids_host = nullptr;
    check(cudaMallocHost(reinterpret_cast<void**>(&I.ids_host), size_t(NR) * sizeof(int32_t)), "pinned ids");
    I.ids_cap = size_t(NR);
    ++I.generation;
  }
  if (!ids && size_t(NR * V) > I.logits_cap) {
    if (I.logits_host) cudaFreeHost(I.logits_host);
    I.logits_host = nullptr;
    check(cudaMallocHost(reinterpret_cast<void**>(&I.logits_host), size_t(NR * V) * sizeof(float)), "pinned logits");
    I.logits_cap = size_t(NR * V);
    ++I.generation;
  }

  // Everything on the device, from the metadata upload to the logits download: run directly, or
  // captured once and replayed for decode steps.
  auto enqueue = [&]() {
  check(cudaMemcpyAsync(dev, I.stage_host, stage_bytes, cudaMemcpyHostToDevice, s), "upload batch");
  float* h = nullptr;  // [NR, D] the final-normed rows whose logits are wanted
  if (I.plain) {
    h = I.forward_plain(T, d_tokens, d_rows, d_states, B, want, all_rows, kmax_end);
  } else {
  // Activations.
  const int64_t hd = H * d, nm = (2 + n) * n, R = c.q_lora_rank, G = c.o_groups, OR = c.o_lora_rank;
  const int64_t E = c.n_routed_experts, K = c.n_experts_per_tok;
  const int64_t nh = c.index_n_heads, ci = c.index_head_dim;
  float* x = I.buf("x", T * n * D);
  float* u = I.buf("u", T * D);
  float* y = I.buf("y", T * D);
  float* pre = I.buf("pre", T * n);
  float* post = I.buf("post", T * n);
  float* comb = I.buf("comb", T * n * n);
  float* qr = I.buf("qr", T * R);
  float* q = I.buf("q", T * hd);
  float* kv = I.buf("kv", T * d);
  float* o = I.buf("o", T * hd);
  float* zo = I.buf("zo", T * G * OR);
  float* glog = I.buf("gate", T * E);
  float* wts = I.buf("weights", T * K);
  I.grow(I.experts, T * K);

  // mHC partial sums of the next mixes: [T, chunks, mixes + 1], written by each residual update.
  float* part = I.buf("hc_part", T * k::hc_chunks(D) * (nm + 1));
  I.mark("embed");
  k::embed(I.embed->view(), d_tokens, T, n, x, s);

  // Residual updates: hc_post (when y is ready) and the next mixes' partial sums in one launch; the
  // mixes, Sinkhorn, u and its RMS norm (the sub-layer's input norm, weight norm_w) in another.
  int64_t part_chunks = k::hc_chunks(D);  // the layout of part the last update left
  // x <- hc_post (post != null) and the next mixes' sums (fn != null). Fast mode at many rows: the
  // update as one block per row and the mixes as one SGEMM (fp32) of fn [nm, n D] and x [rows, n D]
  // into part [rows, nm + 1]; hc_post_mix's block of 32 columns a token was latency bound there
  // (1.26 ms a launch at 2048 rows).
  auto mix_update = [&](const float* po, const float* co, const float* yy, float* xx, int64_t rows,
                        const MatrixView* fn) {
    if (fast_mode && rows >= Impl::kHcGemmRows && (!fn || fn->kind == MatrixView::F32)) {
      const int64_t nmix = fn ? fn->n : 0;
      k::hc_update_rows(po, co, yy, xx, rows, n, D, fn ? part : nullptr, nmix + 1, s);
      if (fn) {
        const float one = 1.f, zero = 0.f;
        const cublasStatus_t st = cublasSgemm(I.blas, CUBLAS_OP_T, CUBLAS_OP_N, int(nmix), int(rows), int(n * D), &one,
                                              reinterpret_cast<const float*>(fn->data), int(n * D), xx, int(n * D),
                                              &zero, part, int(nmix + 1));
        if (st != CUBLAS_STATUS_SUCCESS) fail("cuda: cuBLAS mHC mix GEMM failed (status ", int(st), ")");
      }
      part_chunks = 1;
    } else {
      k::hc_post_mix(po, co, yy, xx, rows, n, D, fn, part, s);
      part_chunks = k::hc_chunks(D);
    }
  };
  auto hc_pre = [&](const DevHc& hc, const Floats& norm_w) {
    k::hc_finish(part, hc.base.get(), hc.scale.get(), x, T, n, D, c.hc_sinkhorn_iters, float(c.hc_eps), eps, pre, post,
                 comb, norm_w.get(), u, s, part_chunks);
  };
  auto hc_post = [&](const DevHc* next) { mix_update(post, comb, y, x, T, next ? &next->fn->view() : nullptr); };
  const DevHc* first_hc = L > 0 ? &I.layers[0].hc_attn : all_rows ? &I.hc_head : nullptr;
  I.mark("mhc");
  if (first_hc) mix_update(nullptr, nullptr, nullptr, x, T, &first_hc->fn->view());

  for (int64_t l = 0; l < L; ++l) {
    const DevLayer& Ly = I.layers[size_t(l)];
    const k::SeqLayerState* seqs = d_states + l * B;
    const k::Rope rope = I.rope_of(Ly.kind);
    // Attention.
    I.mark("mhc");
    hc_pre(Ly.hc_attn, Ly.attn_norm);
    I.mark("attn.project");
    I.lin2(*Ly.lat.wq_a, qr, *Ly.lat.wkv, kv, u, T);
    k::rms_norm_rows(qr, Ly.lat.q_norm.get(), T, R, R, eps, qr, s);
    I.lin(*Ly.lat.wq_b, qr, T, q);
    k::norm_rope_heads(q, d_rows, T, H, d, true, eps, rope, s);
    k::rms_norm_rope_rows(kv, Ly.lat.kv_norm.get(), d_rows, T, d, eps, rope, s);

    k::AttendArgs aa{};
    aa.q = q, aa.kv = kv, aa.rows = d_rows, aa.seqs = seqs, aa.sink = Ly.lat.sink.get();
    aa.t = T, aa.heads = H, aa.d = d, aa.window = c.sliding_window;
    aa.scale = 1.0f / std::sqrt(float(d));
    aa.rope = rope, aa.o = o;
    aa.max_keys = std::min<int64_t>(c.sliding_window, kmax_end);
    auto run_compressor = [&](const DevCompressor& cp, bool indexer) {
      I.mark("attn.compress");
      const int64_t pw = cp.proj_width();
      float* a = I.buf(indexer ? "ia" : "ca", T * pw);
      float* z = I.buf(indexer ? "iz" : "cz", T * pw);
      I.lin(*cp.wkv, u, T, a);
      I.lin(*cp.wgate, u, T, z);
      k::add_ape(z, cp.ape.get(), d_rows, T, pw, cp.ratio, s);
      k::CompressArgs ca{a, z, seqs, indexer, cp.overlap, cp.ratio, cp.width, cp.norm.get(), eps, rope};
      const auto [first, njobs] = job_range.at(cp.ratio);
      k::compress_entries(ca, d_jobs + first, njobs, s);
      k::compress_update_state(ca, d_segs, B, s);
    };
    if (Ly.kind == AttentionKind::HCA) {
      run_compressor(Ly.comp, false);
      aa.hca_m = Ly.comp.ratio;
      aa.max_keys += kmax_end / Ly.comp.ratio;
    } else if (Ly.kind == AttentionKind::CSA) {
      run_compressor(Ly.comp, false);
      // Indexer: queries from the normed low-rank query, head weights from the layer input.
      I.mark("attn.indexer");
      float* iq = I.buf("iq", T * nh * ci);
      float* ig = I.buf("ig", T * nh);
      I.lin(*Ly.iwq_b, qr, T, iq);
      I.lin(*Ly.iweights_proj, u, T, ig);
      k::scale(ig, T * nh, 1.0f / std::sqrt(float(nh)), s);
      k::norm_rope_heads(iq, d_rows, T, nh, ci, false, eps, rope, s);
      run_compressor(Ly.icomp, true);
      I.mark("attn.indexer");
      const int64_t topk = c.index_topk;
      I.grow(I.chosen, T * topk);
      I.grow(I.nchosen, T);
      const int64_t max_visible = kmax_end / Ly.icomp.ratio;
      float* scores = I.buf("iscores", std::max<int64_t>(T * max_visible, 1));
      k::indexer_topk(iq, ig, d_rows, seqs, T, nh, ci, Ly.icomp.ratio, topk, max_visible, scores, I.chosen.get(),
                      I.nchosen.get(), s);
      aa.chosen = I.chosen.get(), aa.nchosen = I.nchosen.get(), aa.topk = topk;
      aa.max_keys += std::min(topk, kmax_end / Ly.comp.ratio);
    }
    I.mark("attn.core");
    if (k::attend_split_ok(aa)) {  // few rows: split over the keys, a group of heads a block
      const int64_t nc = k::attend_split_chunks(aa);
      k::attend_split(aa, I.buf("att_part_o", T * nc * H * d), I.buf("att_part_ml", T * nc * H * 2), s);  // + window_store
    } else {
      if (fast_mode && k::attend_tc_ok(aa)) k::attend_tc(aa, s);  // many rows, fast mode: the tensor-core kernel
      else k::attend(aa, s);
      k::window_store(kv, d_rows, seqs, T, d, c.sliding_window, s);
    }
    I.mark("attn.output");
    // Grouped low-rank output.
    const int64_t gw = hd / G;
    if (!I.use_gemm(*Ly.lat.wo_a, T)) {  // the G block-diagonal GEMVs in one launch
      gemv_grouped(Ly.lat.wo_a->view(), o, hd, T, zo, G * OR, G, gw, OR, s);
    } else {
      for (int64_t g = 0; g < G; ++g)
        I.lin_rows(*Ly.lat.wo_a, o + g * gw, hd, T, zo + g * OR, G * OR, g * OR, (g + 1) * OR);
    }
    I.lin(*Ly.lat.wo_b, zo, T, y);
    I.mark("mhc");
    hc_post(&Ly.hc_ffn);

    // Feed-forward: the routed experts and the shared one.
    hc_pre(Ly.hc_ffn, Ly.ffn_norm);
    I.mark("moe.route");
    I.lin(*Ly.gate, u, T, glog);
    k::route(glog, d_tokens, Ly.hash.size() ? Ly.hash.get() : nullptr, Ly.bias.get(), T, E, K,
             float(c.routed_scaling_factor), I.experts.get(), wts, s);
    // Split: every expert routed, only this rank's slots computed (the others' go to one bucket).
    if (I.split) k::localize_slots(I.experts.get(), wts, T * K, Ly.first_expert, Ly.local_experts, s);
    I.ffn_experts(Ly, T, u, wts, float(c.swiglu_limit), y);
    I.mark("mhc");
    hc_post(l + 1 < L ? &I.layers[size_t(l + 1)].hc_attn : all_rows ? &I.hc_head : nullptr);
  }
  I.mark("head");

  // Head over the wanted rows.
  float* xs = all_rows ? x : I.gather_rows(x, want, n * D);
  h = I.buf("h", NR * D);
  // The hyper head's mixes: from the last residual update when every row is wanted, else here.
  if (!all_rows) mix_update(nullptr, nullptr, nullptr, xs, NR, &I.hc_head.fn->view());
  k::hc_finish(part, I.hc_head.base.get(), I.hc_head.scale.get(), xs, NR, n, D, 0, float(c.hc_eps), eps, nullptr,
               nullptr, nullptr, I.norm.get(), h, s, part_chunks);
  }  // V4
  float* lg = I.buf("logits", NR * V);
  if (!I.split) {
    I.lin(*I.head, h, NR, lg);
  } else {
    I.head_gather(h, NR, lg);
  }
  if (ids) {  // greedy: only each row's argmax comes back
    const int64_t chunks = k::argmax_chunks(V);
    float* pv = I.buf("argmax_v", NR * chunks);
    int32_t* pi = I.grow(I.argmax_i, NR * chunks);
    int32_t* dids = I.grow(I.ids_dev, NR);
    k::argmax_rows(lg, NR, V, pv, pi, dids, s);
    check(cudaMemcpyAsync(I.ids_host, dids, size_t(NR) * sizeof(int32_t), cudaMemcpyDeviceToHost, s), "ids");
  } else {
    check(cudaMemcpyAsync(I.logits_host, lg, size_t(NR * V) * sizeof(float), cudaMemcpyDeviceToHost, s), "logits");
  }
  I.mark("end");
  };  // enqueue

  if (!graph) {
    enqueue();
  } else {
    // Keyed by what changes the launches: the batch, greedy or logits, the GEMV choice and PDL
    // (set_legacy_gemv and set_pdl can flip between steps).
    Impl::Graph& g = I.graphs[8 * B + (pdl_enabled() ? 4 : 0) + (legacy_gemv() ? 2 : 0) + (ids ? 1 : 0)];
    if (g.exec && g.generation != I.generation) cudaGraphExecDestroy(g.exec), g.exec = nullptr, g.warm = false;
    if (!g.warm) {  // first step at this size: run it directly (allocates the workspace)
      enqueue();
      g.warm = true;
    } else {
      if (!g.exec) {
        const int64_t gen = I.generation;
        cudaGraph_t captured = nullptr;
        check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "graph capture");
        try {
          enqueue();
        } catch (...) {
          cudaStreamEndCapture(s, &captured);
          if (captured) cudaGraphDestroy(captured);
          throw;
        }
        check(cudaStreamEndCapture(s, &captured), "graph capture");
        if (I.generation != gen) fail("cuda: the workspace grew during graph capture");
        const cudaError_t e = cudaGraphInstantiate(&g.exec, captured, 0);
        cudaGraphDestroy(captured);
        check(e, "graph instantiate");
        g.generation = I.generation;
      }
      check(cudaGraphLaunch(g.exec, s), "graph launch");
    }
  }
  check(cudaStreamSynchronize(s), "forward");
  I.collect_marks();
  if (ids) ids->assign(I.ids_host, I.ids_host + NR);
  else logits->assign(I.logits_host, I.logits_host + NR * V);
  for (auto& in : batch) in.cache->impl_->pos += int64_t(in.tokens.size());
}

}  // namespace dsv4::cuda
