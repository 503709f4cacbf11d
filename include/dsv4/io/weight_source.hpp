#pragma once
// Looks weights up by their release-layout name in either checkpoint layout and checks each
// against the shape the config implies. Matrices stay in their stored scheme (views into
// the mmap); only small vectors (norms, biases, sinks, ape, mHC parameters) become fp32.
// DeepSeek-V3 parts use the names of DeepSeek's own V3 inference code (attn.wq_a, attn.wkv_b,
// ffn.w1, ffn.gate.bias, ...), which map one to one onto the transformers names V3 ships with.
#include <string>
#include <string_view>
#include <vector>

#include "dsv4/io/checkpoint.hpp"
#include "dsv4/model/config.hpp"
#include "dsv4/numeric/bf16.hpp"
#include "dsv4/quant/matrix_part.hpp"

namespace dsv4 {

enum class TensorLayout { Release, Transformers };

// A release-style name -> its DeepSeek-V3 transformers name: "layers.3.attn.wkv_b.scale" ->
// "model.layers.3.self_attn.kv_b_proj.weight_scale_inv".
inline std::string v3_transformers_name(std::string_view release) {
  if (release == "embed.weight") return "model.embed_tokens.weight";
  if (release == "head.weight") return "lm_head.weight";
  static const std::pair<std::string_view, std::string_view> kParts[] = {
      {"attn", "self_attn"}, {"ffn", "mlp"}, {"attn_norm", "input_layernorm"},
      {"ffn_norm", "post_attention_layernorm"}, {"wq", "q_proj"}, {"wq_a", "q_a_proj"}, {"q_norm", "q_a_layernorm"},
      {"wq_b", "q_b_proj"}, {"wkv_a", "kv_a_proj_with_mqa"}, {"kv_norm", "kv_a_layernorm"}, {"wkv_b", "kv_b_proj"},
      {"wo", "o_proj"}, {"w1", "gate_proj"}, {"w2", "down_proj"}, {"w3", "up_proj"}, {"scale", "weight_scale_inv"}};
  std::string out = "model";
  std::string_view prev;
  size_t start = 0;
  while (start <= release.size()) {
    size_t dot = release.find('.', start);
    if (dot == std::string_view::npos) dot = release.size();
    std::string_view part = release.substr(start, dot - start), mapped = part;
    for (auto& [from, to] : kParts)
      if (part == from) mapped = to;
    if (prev == "gate" && part == "bias") mapped = "e_score_correction_bias";
    out += '.';
    out += mapped;
    prev = part;
    start = dot + 1;
  }
  return out;
}

class WeightSource {
 public:
  WeightSource(const Checkpoint& ck, const ModelConfig& cfg) : ck_(ck), cfg_(cfg) {
    if (ck.find("embed.weight")) layout_ = TensorLayout::Release;
    else if (ck.find("model.embed_tokens.weight")) layout_ = TensorLayout::Transformers;
    else fail(ck.dir().string(), ": neither 'embed.weight' (release layout) nor 'model.embed_tokens.weight' (transformers layout) found");
  }

  TensorLayout layout() const { return layout_; }
  const Checkpoint& checkpoint() const { return ck_; }

  // Release name -> name in this checkpoint.
  std::string name(std::string_view release) const {
    std::string r(release);
    if (layout_ == TensorLayout::Release) return r;
    if (cfg_.arch == Architecture::DeepseekV3) return v3_transformers_name(r);
    if (r == "embed.weight") return "model.embed_tokens.weight";
    if (r == "head.weight") return r;
    if (r.rfind("hc_head_", 0) == 0) return "model.hc_head.hc_" + r.substr(8);
    const std::string kv = ".attn.kv_norm.weight";
    if (r.size() > kv.size() && r.compare(r.size() - kv.size(), kv.size(), kv) == 0)
      return "model." + r.substr(0, r.size() - kv.size()) + ".attn.norm.weight";
    return "model." + r;
  }

  bool has(std::string_view release) const { return ck_.find(name(release)) != nullptr; }
  const TensorView& tensor(std::string_view release) const { return ck_.get(name(release)); }

  // `prefix` + ".weight" (and ".scale" for quantized schemes) as a logical [n, k] matrix.
  Matrix matrix(const std::string& prefix, int64_t n, int64_t k) const {
    const Located l = locate(prefix, n, k);
    ck_.find(l.weight->name);  // maps the bytes (OnDemand)
    if (l.scale) ck_.find(l.scale->name);
    return l.m;
  }

  // Rows [r0, r0 + count) of that matrix: a rank's share of the heads or of an MLP's width. Only
  // those rows' bytes are mapped (see quant/matrix_part.hpp for when it is a copy instead); all of
  // them is matrix(), so one loader serves split and whole models.
  Matrix matrix_rows(const std::string& prefix, int64_t n, int64_t k, int64_t r0, int64_t count) const {
    if (r0 == 0 && count == n) return matrix(prefix, n, k);
    const Located l = locate(prefix, n, k);
    Part src{ck_, l.weight, l.scale};
    return dsv4::matrix_rows(l.m, r0, count, src);
  }
  // Columns [c0, c0 + count): read from the file into memory the checkpoint owns (all: matrix()).
  Matrix matrix_cols(const std::string& prefix, int64_t n, int64_t k, int64_t c0, int64_t count) const {
    if (c0 == 0 && count == k) return matrix(prefix, n, k);
    const Located l = locate(prefix, n, k);
    Part src{ck_, l.weight, l.scale};
    return dsv4::matrix_cols(l.m, c0, count, src);
  }

 private:
  struct Located {
    Matrix m;  // points into the checkpoint's address space; its bytes are not mapped yet
    const TensorView* weight = nullptr;
    const TensorView* scale = nullptr;  // null for F32 and BF16
  };
  // A ByteSource over a weight tensor and its scale tensor.
  struct Part {
    const Checkpoint& ck;
    const TensorView* weight;
    const TensorView* scale;
    const TensorView& of(const uint8_t* p) const {
      return scale && p >= scale->data && p < scale->data + scale->nbytes ? *scale : *weight;
    }
    void map(const uint8_t* p, size_t n) { if (n) ck.map_part(of(p), p, n); }
    void read(const uint8_t* p, size_t n, uint8_t* dst) { if (n) ck.read_part(of(p), p, n, dst); }
    uint8_t* own(size_t n) { return ck.own(n); }
  };
  const TensorView& unmapped(const std::string& release) const {
    if (auto* t = ck_.find_unmapped(name(release))) return *t;
    fail(ck_.dir().string(), ": missing tensor '", name(release), "'");
  }
  Located locate(const std::string& prefix, int64_t n, int64_t k) const {
    const TensorView& w = unmapped(prefix + ".weight");
    auto expect = [&](const Shape& s) {
      if (w.shape != s)
        fail(w.file, ": tensor '", w.name, "' has shape ", shape_str(w.shape), ", expected ", shape_str(s),
             " (", dtype_name(w.dtype), ")");
    };
    switch (w.dtype) {
      case DType::F32: expect({n, k}); return {F32Matrix{w.data, n, k}, &w};
      case DType::BF16: expect({n, k}); return {Bf16Matrix{w.data, n, k}, &w};
      case DType::F8_E4M3: {
        expect({n, k});
        Fp8BlockMatrix m{w.data, nullptr, false, n, k, cfg_.fp8_block_rows, cfg_.fp8_block_cols};
        const TensorView& s = scale_for(prefix, w);
        m.scale_is_f32 = s.dtype == DType::F32;
        if (s.dtype != DType::F8_E8M0 && s.dtype != DType::F32)
          fail(s.file, ": tensor '", s.name, "' has dtype ", dtype_name(s.dtype), ", expected F8_E8M0 or F32");
        Shape want{(n + m.bm - 1) / m.bm, (k + m.bn - 1) / m.bn};
        if (s.shape != want)
          fail(s.file, ": tensor '", s.name, "' has shape ", shape_str(s.shape), ", expected ", shape_str(want),
               " for ", shape_str({n, k}), " in ", m.bm, "x", m.bn, " blocks");
        m.scale = s.data;
        return {m, &w, &s};
      }
      case DType::I8: {
        if (k % 2) fail(w.file, ": tensor '", w.name, "': packed FP4 needs an even input size, got ", k);
        expect({n, k / 2});
        Fp4GroupMatrix m{w.data, nullptr, n, k, 32};
        const TensorView& s = scale_for(prefix, w);
        if (s.dtype != DType::F8_E8M0)
          fail(s.file, ": tensor '", s.name, "' has dtype ", dtype_name(s.dtype), ", expected F8_E8M0");
        Shape want{n, m.scale_cols()};
        if (s.shape != want)
          fail(s.file, ": tensor '", s.name, "' has shape ", shape_str(s.shape), ", expected ", shape_str(want));
        m.scale = s.data;
        return {m, &w, &s};
      }
      default:
        fail(w.file, ": tensor '", w.name, "' has dtype ", dtype_name(w.dtype),
             "; a weight matrix must be F32, BF16, F8_E4M3 or I8 (packed FP4)");
    }
  }

 public:
  // An unquantized matrix stored under exactly `release` (no ".weight" suffix): F32 or BF16.
  Matrix plain_matrix(std::string_view release, int64_t n, int64_t k) const {
    const TensorView& w = tensor(release);
    if (w.shape != Shape{n, k})
      fail(w.file, ": tensor '", w.name, "' has shape ", shape_str(w.shape), ", expected ", shape_str({n, k}));
    if (w.dtype == DType::F32) return F32Matrix{w.data, n, k};
    if (w.dtype == DType::BF16) return Bf16Matrix{w.data, n, k};
    fail(w.file, ": tensor '", w.name, "' has dtype ", dtype_name(w.dtype), ", expected F32 or BF16");
  }

  // A small float tensor of exactly `numel` values (any shape with that many), as fp32.
  std::vector<float> floats(std::string_view release, const Shape& shape) const {
    const TensorView& t = tensor(release);
    if (t.shape != shape)
      fail(t.file, ": tensor '", t.name, "' has shape ", shape_str(t.shape), ", expected ", shape_str(shape));
    std::vector<float> v(size_t(t.numel()));
    switch (t.dtype) {
      case DType::F32: std::memcpy(v.data(), t.data, v.size() * 4); break;
      case DType::BF16:
        for (size_t i = 0; i < v.size(); ++i) v[i] = bf16_to_f32(uint16_t(t.data[2 * i] | (t.data[2 * i + 1] << 8)));
        break;
      default:
        fail(t.file, ": tensor '", t.name, "' has dtype ", dtype_name(t.dtype), ", expected F32 or BF16");
    }
    return v;
  }

 private:
  const TensorView& scale_for(const std::string& prefix, const TensorView& w) const {
    for (const char* suffix : {".scale", ".weight_scale_inv"})
      if (auto* s = ck_.find_unmapped(name(prefix + suffix))) return *s;
    fail(w.file, ": tensor '", w.name, "' is ", dtype_name(w.dtype), " but its scale '", name(prefix + ".scale"),
         "' is missing");
  }

  const Checkpoint& ck_;
  const ModelConfig& cfg_;
  TensorLayout layout_ = TensorLayout::Release;
};

}  // namespace dsv4
