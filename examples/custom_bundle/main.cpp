// A research prototype that swaps one policy through the templates, without editing the library:
// "what do DeepSeek-V4's logits lose if every activation entering a matrix product is rounded to
// BF16?" The question is a kernel bundle (the KernelBundle concept of dsv4/kernels/bundle.hpp):
// Bf16Activations rounds the activations, then runs the reference product, and counts the
// multiply-adds on the way. Model::forward<Bf16Activations> is the library's own forward pass,
// instantiated with it.
//   custom_bundle MODEL_DIR [TOKENS]   (prints the logit drift against Fp32Reference; exit 1 if the
//                                       drift is not finite or the forward passes disagree in shape)
#include <cmath>
#include <cstdio>
#include <vector>
#include <dsv4/dsv4.hpp>

namespace {

struct Bf16Activations {
  static constexpr const char* kName = "bf16-activations";
  static constexpr bool kBlockedAttention = false;
  static inline int64_t multiply_adds = 0;  // over all products since the start

  // y [t, row0:row1] (row stride ldy) = bf16(x [t, K] (row stride ldx)) · W[row0:row1]^T
  static void matmul(const dsv4::Matrix& w, const float* x, int64_t ldx, int64_t t, float* y, int64_t ldy,
                     int64_t row0, int64_t row1) {
    const int64_t k = dsv4::cols(w);
    std::vector<float> xr(static_cast<size_t>(t * k));
    for (int64_t i = 0; i < t; ++i)
      for (int64_t j = 0; j < k; ++j) xr[size_t(i * k + j)] = dsv4::bf16_to_f32(dsv4::f32_to_bf16(x[i * ldx + j]));
    dsv4::Fp32Reference::matmul(w, xr.data(), k, t, y, ldy, row0, row1);
    multiply_adds += t * k * (row1 - row0);
  }
};
static_assert(dsv4::KernelBundle<Bf16Activations>);

template <class Bundle>
std::vector<float> logits_of(const dsv4::Model& m, const std::vector<int32_t>& ids) {
  dsv4::SequenceCache cache = m.new_cache();
  dsv4::SequenceInput in{&cache, ids};
  std::vector<float> logits;  // [tokens, V]
  m.forward<Bundle>({&in, 1}, logits, dsv4::LogitRows::All);
  return logits;
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) return std::fprintf(stderr, "usage: custom_bundle MODEL_DIR [TOKENS]\n"), 2;
  const dsv4::Model m = dsv4::Model::load(argv[1]);
  const int64_t n = argc > 2 ? std::atoll(argv[2]) : 48, V = m.config().vocab_size;
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back(int32_t((i * 7919 + 13) % V));

  const auto ref = logits_of<dsv4::Fp32Reference>(m, ids);
  const auto bf = logits_of<Bf16Activations>(m, ids);
  if (ref.size() != bf.size()) return std::fprintf(stderr, "custom_bundle: shapes differ\n"), 1;
  double max_err = 0, max_ref = 0;
  int64_t same_top1 = 0;
  for (int64_t r = 0; r < n; ++r) {
    const std::span<const float> a(&ref[size_t(r * V)], size_t(V)), b(&bf[size_t(r * V)], size_t(V));
    for (int64_t v = 0; v < V; ++v) {
      max_err = std::max(max_err, double(std::fabs(a[size_t(v)] - b[size_t(v)])));
      max_ref = std::max(max_ref, double(std::fabs(a[size_t(v)])));
    }
    same_top1 += dsv4::argmax(a) == dsv4::argmax(b);
  }
  std::printf("bundle %s over %lld tokens: %.3g multiply-adds per token\n", Bf16Activations::kName, (long long)n,
              double(Bf16Activations::multiply_adds) / double(n));
  std::printf("max |logit - fp32 reference| = %.3g (largest logit %.3g); top-1 agreement %lld/%lld\n", max_err,
              max_ref, (long long)same_top1, (long long)n);
  return std::isfinite(max_err) ? 0 : 1;
} catch (const dsv4::Error& e) {
  std::fprintf(stderr, "custom_bundle: %s\n", e.what());
  return 1;
}
