// The CUDA GEMV on every stored weight scheme against the CPU decode (decode_row + fp32 dot), at
// sizes with partial scale tiles, batch 1 and 3. Exits 77 (ctest SKIP) when no GPU is present.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "dsv4/cuda/gemv.hpp"

using namespace dsv4;

namespace {

int check_scheme(int scheme, int64_t n, int64_t k, int64_t batch, std::mt19937& rng) {
  std::uniform_int_distribution<int> byte(0, 255), scale_byte(120, 130);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<uint8_t> q, s;
  Matrix m;
  const char* name = "";
  switch (scheme) {
    case 0:
      name = "f32";
      q.resize(size_t(n * k * 4));
      for (int64_t i = 0; i < n * k; ++i) {
        const float v = normal(rng);
        std::memcpy(&q[size_t(i * 4)], &v, 4);
      }
      m = F32Matrix{q.data(), n, k};
      break;
    case 1:
      name = "bf16";
      q.resize(size_t(n * k * 2));
      for (int64_t i = 0; i < n * k; ++i) q[size_t(2 * i)] = uint8_t(byte(rng)), q[size_t(2 * i + 1)] = uint8_t(0x3c + byte(rng) % 3);
      m = Bf16Matrix{q.data(), n, k};
      break;
    case 2: {
      name = "fp8-block";
      const int64_t bm = 32, bn = 32;
      q.resize(size_t(n * k));
      for (auto& b : q) b = uint8_t(byte(rng) & 0xF7);  // no NaN codes
      s.resize(size_t(((n + bm - 1) / bm) * ((k + bn - 1) / bn)));
      for (auto& b : s) b = uint8_t(scale_byte(rng));
      m = Fp8BlockMatrix{q.data(), s.data(), false, n, k, bm, bn};
      break;
    }
    default: {
      name = "fp4-group";
      q.resize(size_t(n * k / 2));
      for (auto& b : q) b = uint8_t(byte(rng));
      s.resize(size_t(n * ((k + 31) / 32)));
      for (auto& b : s) b = uint8_t(scale_byte(rng));
      m = Fp4GroupMatrix{q.data(), s.data(), n, k, 32};
      break;
    }
  }
  std::vector<float> x(size_t(batch * k)), y(size_t(batch * n)), row(static_cast<size_t>(k));
  for (auto& v : x) v = normal(rng);
  const cuda::DeviceMatrix dm(cuda::view_of(m));
  dm.matvec(x, y, batch);
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    std::visit([&](const auto& w) { w.decode_row(i, row.data()); }, m);
    for (int64_t b = 0; b < batch; ++b) {
      double ref = 0, mag = 0;
      for (int64_t j = 0; j < k; ++j) {
        const double t = double(row[size_t(j)]) * x[size_t(b * k + j)];
        ref += t, mag += std::fabs(t);
      }
      const double err = std::fabs(ref - y[size_t(b * n + i)]) / (mag + 1e-30);
      if (!(err <= worst)) worst = err;
    }
  }
  const bool ok = worst < 1e-5;
  std::printf("%-10s n=%lld k=%lld batch=%lld  max rel err %.3g  %s\n", name, (long long)n, (long long)k,
              (long long)batch, worst, ok ? "ok" : "FAIL");
  return ok ? 0 : 1;
}

}  // namespace

int main() {
  if (!cuda::device_available()) {
    std::printf("SKIP: no CUDA device\n");
    return 77;
  }
  std::mt19937 rng(7);
  int failures = 0;
  for (int scheme = 0; scheme < 4; ++scheme)
    for (int64_t batch : {1, 3}) failures += check_scheme(scheme, 77, 200, batch, rng);
  // K a multiple of 32: the vector path; N and batch 11 leave partial 8-row blocks and batch chunks.
  for (int scheme = 0; scheme < 4; ++scheme)
    for (int64_t batch : {1, 11}) failures += check_scheme(scheme, 1031, 4096, batch, rng);
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
