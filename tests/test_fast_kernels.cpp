// The SIMD kernels against the scalar reference, on every ISA this CPU has, for every weight
// scheme, at sizes that are not multiples of the vector width and with partial scale tiles.
#include <catch2/catch.hpp>
#include <random>

#include "dsv4/dsv4.hpp"

using namespace dsv4;

namespace {

// Random weights of a scheme, owning their bytes.
struct RandomMatrix {
  std::vector<uint8_t> q, scale;
  Matrix m;
};

RandomMatrix make(int scheme, int64_t n, int64_t k, std::mt19937& rng, int64_t bm = 32, int64_t bn = 32) {
  RandomMatrix r;
  std::uniform_int_distribution<int> byte(0, 255);
  std::normal_distribution<float> normal(0.f, 1.f);
  switch (scheme) {
    case 0: {  // F32
      r.q.resize(size_t(n * k * 4));
      for (int64_t i = 0; i < n * k; ++i) {
        float v = normal(rng);
        std::memcpy(&r.q[size_t(i * 4)], &v, 4);
      }
      r.m = F32Matrix{r.q.data(), n, k};
      break;
    }
    case 1: {  // BF16
      r.q.resize(size_t(n * k * 2));
      for (int64_t i = 0; i < n * k; ++i) {
        uint16_t b = f32_to_bf16(normal(rng));
        r.q[size_t(2 * i)] = uint8_t(b), r.q[size_t(2 * i + 1)] = uint8_t(b >> 8);
      }
      r.m = Bf16Matrix{r.q.data(), n, k};
      break;
    }
    case 2: {  // block FP8 with E8M0 tile scales, NaN codes excluded
      r.q.resize(size_t(n * k));
      for (auto& b : r.q) do b = uint8_t(byte(rng)); while ((b & 0x7F) == 0x7F);
      const int64_t sr = (n + bm - 1) / bm, sc = (k + bn - 1) / bn;
      r.scale.resize(size_t(sr * sc));
      for (auto& s : r.scale) s = uint8_t(120 + byte(rng) % 6);
      r.m = Fp8BlockMatrix{r.q.data(), r.scale.data(), false, n, k, bm, bn};
      break;
    }
    default: {  // grouped FP4
      r.q.resize(size_t(n * k / 2));
      for (auto& b : r.q) b = uint8_t(byte(rng));
      const int64_t sc = (k + 31) / 32;
      r.scale.resize(size_t(n * sc));
      for (auto& s : r.scale) s = uint8_t(122 + byte(rng) % 6);
      r.m = Fp4GroupMatrix{r.q.data(), r.scale.data(), n, k, 32};
      break;
    }
  }
  return r;
}

std::vector<std::pair<std::string, cpu::MatmulFn>> kernels() {
  std::vector<std::pair<std::string, cpu::MatmulFn>> out;
  const cpu::Isa isa = cpu::detected_isa();
  out.push_back({"generic", &cpu::simd_matmul<xsimd::default_arch>});
  if (isa >= cpu::Isa::Avx2) out.push_back({"avx2", cpu::matmul_fn_avx2()});
  if (isa >= cpu::Isa::Avx512) out.push_back({"avx512", cpu::matmul_fn_avx512(false)});
  if (isa >= cpu::Isa::Avx512Vnni) out.push_back({"avx512vnni", cpu::matmul_fn_avx512vnni(false)});
  if (cpu::cpu_has_avx512vbmi()) {  // the FP8 decode by byte tables (fp8_vbmi.hpp)
    if (isa >= cpu::Isa::Avx512) out.push_back({"avx512+vbmi", cpu::matmul_fn_avx512(true)});
    if (isa >= cpu::Isa::Avx512Vnni) out.push_back({"avx512vnni+vbmi", cpu::matmul_fn_avx512vnni(true)});
  }
  return out;
}

// The integer FP4 kernel rounds each activation to a step of max|x| / 32639 over its group of 32:
// per output, the error is at most sum_j |w_j| · step_g(j) / 2 (plus fp32 summation slack).
std::vector<double> q16_bound(const Matrix& w, const float* x, int64_t ldx, int64_t t, int64_t ldy, int64_t r0,
                               int64_t r1) {
  const int64_t k = cols(w);
  std::vector<double> bound(size_t(t * ldy), 0.0);
  std::vector<float> row(static_cast<size_t>(k));
  for (int64_t n = r0; n < r1; ++n) {
    std::visit([&](auto& s) { s.decode_row(n, row.data()); }, w);
    for (int64_t i = 0; i < t; ++i) {
      double b = 0;
      for (int64_t g = 0; g < k; g += 32) {
        float amax = 0;
        for (int64_t j = g; j < g + 32; ++j) amax = std::max(amax, std::fabs(x[i * ldx + j]));
        for (int64_t j = g; j < g + 32; ++j) b += std::fabs(row[size_t(j)]) * amax / 32639.0 / 2.0;
      }
      bound[size_t(i * ldy + (n - r0))] = b;
    }
  }
  return bound;
}

}  // namespace

TEST_CASE("SIMD matmul equals the reference for every scheme, ISA and awkward size", "[fast]") {
  std::mt19937 rng(1234);
  const char* names[] = {"f32", "bf16", "fp8", "fp4", "fp8 (64-column tiles)"};
  // {129, 512}: enough work for the kernels to split rows over threads. {45, 2848} and {9, 4160}:
  // several K tiles of the few-token FP8 and FP4 kernels, a partial last chunk, groups of rows past
  // 32. {5, 8256}: the one-token FP8 kernel's equal K tiles (past 6144 columns), the last partial.
  const int64_t shapes[][2] = {{1, 32},    {7, 64},     {33, 96},  {70, 160}, {5, 1056},
                               {130, 64 + 32 + 2}, {129, 512}, {45, 2848}, {9, 4160}, {5, 8256}};
  // FP8 twice: tiles of 32 / 48 columns (chunks of 64 of the VBMI decode span tiles), and of 64 /
  // 128; a tail of fewer than 64 columns where k is not a multiple of 64; 32-row tiles, partial.
  for (int scheme = 0; scheme < 5; ++scheme)
    for (auto& shape : shapes)
      for (int64_t t : {1, 2, 3, 4, 5, 7, 8, 9, 17, 67}) {
        int64_t n = shape[0], k = shape[1];
        if (scheme == 3 && k % 2) continue;
        const int64_t bn = scheme == 4 ? (k > 100 ? 128 : 64) : scheme == 2 && k > 100 ? 48 : 32;
        RandomMatrix w = make(scheme == 4 ? 2 : scheme, n, k, rng, 32, bn);
        std::normal_distribution<float> normal(0.f, 1.f);
        const int64_t ldx = k + 3, ldy = n + 5;  // strided rows
        std::vector<float> x(size_t(t * ldx));
        for (auto& v : x) v = normal(rng);
        // A row range that starts and ends off the microkernel's row blocks.
        const int64_t r0 = n > 3 ? 1 : 0, r1 = n > 3 ? n - 1 : n;
        std::vector<float> want(size_t(t * ldy), -7.f);
        ref::matmul(w.m, x.data(), ldx, t, want.data(), ldy, r0, r1);
        const bool integer = scheme == 3 && k % 32 == 0;  // the integer kernel on AVX2 / AVX-512
        const std::vector<double> bound = integer ? q16_bound(w.m, x.data(), ldx, t, ldy, r0, r1) : std::vector<double>{};
        for (auto& [isa, fn] : kernels()) {
          std::vector<float> got(size_t(t * ldy), -7.f);
          fn(w.m, x.data(), ldx, t, got.data(), ldy, r0, r1);
          const bool quantized = integer && isa != "generic";
          double max_err = 0, max_ref = 0, max_over = 0;  // max_over: error beyond the 16-bit bound
          for (int64_t i = 0; i < t; ++i)
            for (int64_t j = 0; j < ldy; ++j) {
              const size_t at = size_t(i * ldy + j);
              if (j >= r1 - r0) {
                REQUIRE(got[at] == -7.f);  // nothing written past the row range
                continue;
              }
              const double err = std::fabs(double(got[at]) - double(want[at]));
              max_err = std::max(max_err, err);
              max_ref = std::max(max_ref, double(std::fabs(want[at])));
              if (quantized) max_over = std::max(max_over, err - bound[at]);
            }
          const double slack = 1e-5 * std::max(1.0, max_ref) * std::sqrt(double(k));
          INFO(names[scheme] << " " << isa << " N=" << n << " K=" << k << " T=" << t << " err " << max_err
                             << (quantized ? " (16-bit activations)" : ""));
          if (quantized) {
            REQUIRE(max_over <= slack);
          } else {
            REQUIRE(max_err <= slack);
          }
        }
      }
}

TEST_CASE("FP4 weights at every offset from a 64-byte line give the reference's answer", "[fast]") {
  // Expert tensors start wherever the file puts them (56 mod 64 in `dsv4 synth` output). Every kernel
  // must answer as the reference at any offset, rows at different offsets where K % 128 > 0, and no
  // byte just outside the matrix (codes of 6.0) may move into a product.
  std::mt19937 rng(13);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (int64_t k : {128, 384, 4096, 224, 32}) {  // 224 and 32: rows at different offsets, a partial chunk
    const int64_t n = 37;
    RandomMatrix w = make(3, n, k, rng);
    std::vector<uint8_t> buf(size_t(n * k / 2 + 256));
    for (int64_t off = 0; off < 64; off += k > 1000 ? 5 : 1) {
      uint8_t* q = buf.data() + 64 - reinterpret_cast<uintptr_t>(buf.data()) % 64 + off;
      std::fill(buf.begin(), buf.end(), uint8_t(0x77));
      std::memcpy(q, w.q.data(), w.q.size());
      const Matrix m = Fp4GroupMatrix{q, w.scale.data(), n, k, 32};
      for (int64_t t : {1, 2, 5}) {
        std::vector<float> x(size_t(t * k));
        for (auto& v : x) v = normal(rng);
        for (int64_t r0 : {0, 2}) {  // 2: a row range
          std::vector<float> want(size_t(t * n)), got(size_t(t * n));
          ref::matmul(m, x.data(), k, t, want.data(), n, r0, n);
          const std::vector<double> bound = q16_bound(m, x.data(), k, t, n, r0, n);
          for (auto& [isa, fn] : kernels()) {
            fn(m, x.data(), k, t, got.data(), n, r0, n);
            for (int64_t i = 0; i < t; ++i)
              for (int64_t r = 0; r < n - r0; ++r) {
                const size_t at = size_t(i * n + r);
                const double err = std::fabs(double(got[at]) - double(want[at]));
                INFO(isa << " K=" << k << " offset " << off << " T=" << t << " rows " << r0 << ".. token " << i
                         << " row " << r0 + r << " got " << got[at] << " want " << want[at]);
                REQUIRE(err <= (isa == "generic" ? 0.0 : bound[at]) + 1e-4 * std::sqrt(double(k)));
              }
          }
        }
      }
    }
  }
}

TEST_CASE("FP8 tiles whose scale cannot be folded take the exact slow path", "[fast]") {
  std::mt19937 rng(7);
  for (int64_t bn : {32, 64}) {  // 64: the VBMI kernel's rows of such a tile go to the exact path too
    RandomMatrix w = make(2, 40, 64, rng, 32, bn);
    for (auto& s : w.scale) s = 140;  // 2^13: 2^13 * 2^120 overflows a float
    for (int64_t j = 0; j < 64 / bn; ++j) w.scale[size_t(j)] = 124;  // one ordinary tile row beside them
    for (int64_t t : {1, 3}) {
      std::vector<float> x(size_t(64 * t), 0.5f), want(size_t(40 * t)), got(size_t(40 * t));
      ref::matmul(w.m, x.data(), 64, t, want.data(), 40, 0, 40);
      for (auto& [isa, fn] : kernels()) {
        fn(w.m, x.data(), 64, t, got.data(), 40, 0, 40);
        for (size_t i = 0; i < want.size(); ++i) {
          INFO(isa << " bn " << bn << " T " << t << " output " << i);
          REQUIRE(got[i] == Approx(want[i]).epsilon(1e-5));
        }
      }
    }
  }
}

TEST_CASE("FP8 NaN codes give NaN in the VBMI decode, as in the reference", "[fast]") {
  std::mt19937 rng(9);
  RandomMatrix w = make(2, 4, 128, rng, 32, 64);
  w.q[1 * 128 + 70] = 0x7F, w.q[2 * 128 + 3] = 0xFF;  // rows 1 and 2
  std::vector<float> x(128, 0.25f), got(4);
  if (!cpu::cpu_has_avx512vbmi()) return;
  for (bool vnni : {false, true}) {
    if (vnni && cpu::detected_isa() < cpu::Isa::Avx512Vnni) continue;
    (vnni ? cpu::matmul_fn_avx512vnni(true) : cpu::matmul_fn_avx512(true))(w.m, x.data(), 128, 1, got.data(), 4, 0, 4);
    REQUIRE(std::isfinite(got[0]));
    REQUIRE(std::isnan(got[1]));
    REQUIRE(std::isnan(got[2]));
    REQUIRE(std::isfinite(got[3]));
  }
}

TEST_CASE("row_slice views rows [r0, r0 + n) of every scheme; FP8 slices start on a block", "[kernels][slice]") {
  std::mt19937 rng(7);
  const int64_t n = 70, k = 96;  // 70 rows: a partial last FP8 block of 32
  for (int scheme = 0; scheme < 4; ++scheme) {
    INFO("scheme " << scheme);
    const RandomMatrix r = make(scheme, n, k, rng);
    const int64_t r0 = scheme == 2 ? 32 : 13, cnt = n - r0;
    const Matrix s = row_slice(r.m, r0, cnt);
    REQUIRE(rows(s) == cnt);
    REQUIRE(cols(s) == k);
    std::vector<float> a(static_cast<size_t>(k)), b(static_cast<size_t>(k));
    for (int64_t i = 0; i < cnt; ++i) {
      decode_row(s, i, a.data());
      decode_row(r.m, r0 + i, b.data());
      REQUIRE(a == b);
    }
  }
  const RandomMatrix f8 = make(2, n, k, rng);
  REQUIRE_THROWS_WITH(row_slice(f8.m, 16, 8), Catch::Contains("block boundary"));
  REQUIRE_THROWS_WITH(row_slice(f8.m, 64, 32), Catch::Contains("of a 70-row matrix"));
}

TEST_CASE("FP8 weights at every offset from a 64-byte line give the reference's answer", "[fast]") {
  // Checkpoint tensors start wherever the file puts them; the VBMI kernel then aligns its chunks to
  // the rows' addresses (K a multiple of 64) and masks each row's first and last chunk. NaN codes
  // just outside the matrix must not leak in.
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.f, 1.f);
  // 8256: the one-token kernel's K tiles; 100: rows at different offsets, the unaligned grid.
  for (int64_t k : {64, 192, 4160, 8256, 100}) {
    const int64_t n = 37, bn = k > 1000 ? 128 : 64;
    RandomMatrix w = make(2, n, k, rng, 32, bn);
    std::vector<uint8_t> buf(size_t(n * k + 256));  // NaN codes around the matrix
    for (int64_t off = 0; off < 64; off += k > 1000 ? 7 : 1) {
      uint8_t* q = buf.data() + 64 - reinterpret_cast<uintptr_t>(buf.data()) % 64 + off;
      std::fill(buf.begin(), buf.end(), uint8_t(0x7F));
      std::memcpy(q, w.q.data(), w.q.size());
      const Matrix m = Fp8BlockMatrix{q, w.scale.data(), false, n, k, 32, bn};
      for (int64_t t : {1, 2, 5, 9}) {
        std::vector<float> x(size_t(t * k));
        for (auto& v : x) v = normal(rng);
        std::vector<float> want(size_t(t * n)), got(size_t(t * n));
        ref::matmul(m, x.data(), k, t, want.data(), n, 0, n);
        for (auto& [isa, fn] : kernels())
          for (int64_t r0 : {0, 2}) {  // 2: a row range's grid
            fn(m, x.data(), k, t, got.data(), n, r0, n);
            for (int64_t i = 0; i < t; ++i)
              for (int64_t r = r0; r < n; ++r) {
                const float g = got[size_t(i * n + r - r0)], e = want[size_t(i * n + r)];
                INFO(isa << " K=" << k << " offset " << off << " T=" << t << " rows " << r0 << ".. token " << i
                         << " row " << r);
                REQUIRE(std::isfinite(g));
                REQUIRE(g == Approx(e).epsilon(1e-4).margin(1e-4 * std::sqrt(double(k))));
              }
          }
      }
    }
  }
}
