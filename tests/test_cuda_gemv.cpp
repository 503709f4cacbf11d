// The CUDA GEMV on every stored weight scheme against the CPU decode (decode_row + fp32 dot), at
// sizes with partial scale tiles, batch 1 and 3; the tensor-core FP8/FP4 path (batch chunks of 1..8,
// matrices of 300 to 17003 rows, K not a multiple of the pipeline step, unaligned scale rows, x of a
// wide dynamic range, E8M0 scale 0) and the earlier FMA kernels (set_legacy_gemv; FP8 tiles of 32
// columns always take those), the grouped GEMV of the attention output, the routed experts grouped
// by expert (uneven groups, empty experts, one and two slots a job), and the device argmax. Exits 77
// (ctest SKIP) when no GPU is present.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "dsv4/cuda/gemv.hpp"
#include "dsv4/moe/group_limited_router.hpp"
#include "../src/cuda/kernels.hpp"

using namespace dsv4;

namespace {

struct Opts {
  int64_t fp8_block = 32;  // FP8 scale tile (bm = bn)
  int scale_lo = 120, scale_hi = 130;
  bool wide_x = false;     // x spanning ~2^-20 .. 2^14 in magnitude
  bool nan_codes = false;  // a few E8M0 scales 0xFF and (FP8) E4M3 NaN codes: those rows' y must be NaN
};

int check_scheme(int scheme, int64_t n, int64_t k, int64_t batch, std::mt19937& rng, const Opts& o = {}) {
  std::uniform_int_distribution<int> byte(0, 255), scale_byte(o.scale_lo, o.scale_hi), expo(-20, 14);
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
      const int64_t bm = o.fp8_block, bn = o.fp8_block;
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
  if (o.nan_codes && !s.empty()) {
    std::uniform_int_distribution<size_t> at_s(0, s.size() - 1), at_q(0, q.size() - 1);
    for (int i = 0; i < 3; ++i) s[at_s(rng)] = 0xFF;
    if (scheme == 2)
      for (int i = 0; i < 3; ++i) q[at_q(rng)] = i % 2 ? 0x7F : 0xFF;
  }
  std::vector<float> x(size_t(batch * k)), y(size_t(batch * n)), row(static_cast<size_t>(k));
  for (auto& v : x) v = o.wide_x ? std::ldexp(normal(rng), expo(rng)) : normal(rng);
  const cuda::DeviceMatrix dm(cuda::view_of(m));
  dm.matvec(x, y, batch);
  double worst = 0;
  int64_t nan_rows = 0, nan_wrong = 0;  // outputs the oracle makes NaN; those the GPU did not
  for (int64_t i = 0; i < n; ++i) {
    std::visit([&](const auto& w) { w.decode_row(i, row.data()); }, m);
    for (int64_t b = 0; b < batch; ++b) {
      double ref = 0, mag = 0;
      for (int64_t j = 0; j < k; ++j) {
        const double t = double(row[size_t(j)]) * x[size_t(b * k + j)];
        ref += t, mag += std::fabs(t);
      }
      const float got = y[size_t(b * n + i)];
      if (std::isnan(ref)) {
        ++nan_rows, nan_wrong += !std::isnan(got);
        continue;
      }
      const double err = std::fabs(ref - got) / (mag + 1e-30);
      if (!(err <= worst)) worst = err;
    }
  }
  const bool ok = worst < 1e-5 && nan_wrong == 0 && (!o.nan_codes || nan_rows > 0);
  std::printf("%-10s n=%lld k=%lld batch=%lld%s%s  max rel err %.3g  %s\n", name, (long long)n, (long long)k,
              (long long)batch, cuda::legacy_gemv() ? " (legacy)" : "",
              o.nan_codes ? (" NaN codes: " + std::to_string(nan_rows - nan_wrong) + "/" + std::to_string(nan_rows) + " NaN").c_str() : "",
              worst, ok ? "ok" : "FAIL");
  return ok ? 0 : 1;
}

// gemv_grouped on device buffers: W [groups m, K] block-diagonal against x [batch, ldx] (group g
// reads columns g x_group ..), into y [batch, ldy] (group g writes columns g y_group ..); y starts
// as NaN so that unwritten and stray writes both show.
int check_grouped(int scheme, int64_t groups, int64_t m, int64_t k, int64_t x_group, int64_t y_group, int64_t batch,
                  std::mt19937& rng) {
  std::uniform_int_distribution<int> byte(0, 255), scale_byte(120, 130);
  std::normal_distribution<float> normal(0.f, 1.f);
  const int64_t n = groups * m;
  std::vector<uint8_t> q, s;
  Matrix mat;
  if (scheme == 2) {
    q.resize(size_t(n * k));
    for (auto& b : q) b = uint8_t(byte(rng) & 0xF7);
    s.resize(size_t(((n + 127) / 128) * ((k + 127) / 128)));
    for (auto& b : s) b = uint8_t(scale_byte(rng));
    mat = Fp8BlockMatrix{q.data(), s.data(), false, n, k, 128, 128};
  } else if (scheme == 3) {
    q.resize(size_t(n * k / 2));
    for (auto& b : q) b = uint8_t(byte(rng));
    s.resize(size_t(n * ((k + 31) / 32)));
    for (auto& b : s) b = uint8_t(scale_byte(rng));
    mat = Fp4GroupMatrix{q.data(), s.data(), n, k, 32};
  } else {
    q.resize(size_t(n * k * 2));
    for (int64_t i = 0; i < n * k; ++i) q[size_t(2 * i)] = uint8_t(byte(rng)), q[size_t(2 * i + 1)] = uint8_t(0x3c + byte(rng) % 3);
    mat = Bf16Matrix{q.data(), n, k};
  }
  const int64_t ldx = (groups - 1) * x_group + k + 4, ldy = (groups - 1) * y_group + m + 3;
  std::vector<float> x(size_t(batch * ldx)), y(size_t(batch * ldy), std::nanf("")), row(static_cast<size_t>(k));
  for (auto& v : x) v = normal(rng);
  const cuda::DeviceMatrix dm(cuda::view_of(mat));
  float *dx = nullptr, *dy = nullptr;
  if (cudaMalloc(&dx, x.size() * 4) != cudaSuccess || cudaMalloc(&dy, y.size() * 4) != cudaSuccess) return 1;
  cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dy, y.data(), y.size() * 4, cudaMemcpyHostToDevice);
  cuda::gemv_grouped(dm.view(), dx, ldx, batch, dy, ldy, groups, x_group, y_group, nullptr);
  const bool ran = cudaMemcpy(y.data(), dy, y.size() * 4, cudaMemcpyDeviceToHost) == cudaSuccess;
  cudaFree(dx), cudaFree(dy);
  double worst = ran ? 0 : 1;
  int64_t stray = 0;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t j = 0; j < ldy; ++j) {
      const int64_t g = j / y_group, i = j % y_group;
      const bool mine = g < groups && i < m;
      const float got = y[size_t(b * ldy + j)];
      if (!mine) {
        stray += !std::isnan(got);
        continue;
      }
      std::visit([&](const auto& w) { w.decode_row(g * m + i, row.data()); }, mat);
      double ref = 0, mag = 0;
      for (int64_t c = 0; c < k; ++c) {
        const double t = double(row[size_t(c)]) * x[size_t(b * ldx + g * x_group + c)];
        ref += t, mag += std::fabs(t);
      }
      const double err = std::fabs(ref - got) / (mag + 1e-30);
      if (!(err <= worst)) worst = err;
    }
  const bool ok = worst < 1e-5 && stray == 0;
  std::printf("grouped %d x (%lld x %lld) scheme %d batch %lld x_group %lld y_group %lld  max rel err %.3g, stray %lld  %s\n",
              int(groups), (long long)m, (long long)k, scheme, (long long)batch, (long long)x_group, (long long)y_group,
              worst, (long long)stray, ok ? "ok" : "FAIL");
  return ok ? 0 : 1;
}

// A random stored matrix of scheme 2 (FP8, 128 x 128 tiles) or 3 (FP4, groups of 32), bytes kept in q/s.
Matrix random_matrix(int scheme, int64_t n, int64_t k, std::vector<uint8_t>& q, std::vector<uint8_t>& s,
                     std::mt19937& rng) {
  std::uniform_int_distribution<int> byte(0, 255), scale_byte(120, 130);
  if (scheme == 2) {
    q.resize(size_t(n * k));
    for (auto& b : q) b = uint8_t(byte(rng) & 0xF7);
    s.resize(size_t(((n + 127) / 128) * ((k + 127) / 128)));
    for (auto& b : s) b = uint8_t(scale_byte(rng));
    return Fp8BlockMatrix{q.data(), s.data(), false, n, k, 128, 128};
  }
  q.resize(size_t(n * k / 2));
  for (auto& b : q) b = uint8_t(byte(rng));
  s.resize(size_t(n * ((k + 31) / 32)));
  for (auto& b : s) b = uint8_t(scale_byte(rng));
  return Fp4GroupMatrix{q.data(), s.data(), n, k, 32};
}

// gemv_pair: y1 = W1 x, y2 = W2 x in one launch, each y with a row stride past its rows (NaN there
// must stay NaN).
int check_pair(int scheme, int64_t n1, int64_t n2, int64_t k, int64_t batch, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<uint8_t> q1, s1, q2, s2;
  const Matrix m1 = random_matrix(scheme, n1, k, q1, s1, rng), m2 = random_matrix(scheme, n2, k, q2, s2, rng);
  const int64_t ld1 = n1 + 5, ld2 = n2 + 2;
  std::vector<float> x(size_t(batch * k)), y1(size_t(batch * ld1), std::nanf("")), y2(size_t(batch * ld2), std::nanf(""));
  for (auto& v : x) v = normal(rng);
  const cuda::DeviceMatrix d1(cuda::view_of(m1)), d2(cuda::view_of(m2));
  float *dx = nullptr, *dy1 = nullptr, *dy2 = nullptr;
  if (cudaMalloc(&dx, x.size() * 4) != cudaSuccess || cudaMalloc(&dy1, y1.size() * 4) != cudaSuccess ||
      cudaMalloc(&dy2, y2.size() * 4) != cudaSuccess)
    return 1;
  cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dy1, y1.data(), y1.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dy2, y2.data(), y2.size() * 4, cudaMemcpyHostToDevice);
  cuda::gemv_pair(d1.view(), dy1, ld1, d2.view(), dy2, ld2, dx, k, batch, nullptr);
  bool ran = cudaMemcpy(y1.data(), dy1, y1.size() * 4, cudaMemcpyDeviceToHost) == cudaSuccess;
  ran = ran && cudaMemcpy(y2.data(), dy2, y2.size() * 4, cudaMemcpyDeviceToHost) == cudaSuccess;
  cudaFree(dx), cudaFree(dy1), cudaFree(dy2);
  double worst = ran ? 0 : 1;
  int64_t stray = 0;
  std::vector<float> row(static_cast<size_t>(k));
  for (int which = 0; which < 2; ++which) {
    const Matrix& m = which ? m2 : m1;
    const std::vector<float>& y = which ? y2 : y1;
    const int64_t n = which ? n2 : n1, ld = which ? ld2 : ld1;
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t i = 0; i < ld; ++i) {
        const float got = y[size_t(b * ld + i)];
        if (i >= n) {
          stray += !std::isnan(got);
          continue;
        }
        std::visit([&](const auto& w) { w.decode_row(i, row.data()); }, m);
        double ref = 0, mag = 0;
        for (int64_t c = 0; c < k; ++c) {
          const double t = double(row[size_t(c)]) * x[size_t(b * k + c)];
          ref += t, mag += std::fabs(t);
        }
        const double err = std::fabs(ref - got) / (mag + 1e-30);
        if (!(err <= worst)) worst = err;
      }
  }
  const bool ok = worst < 1e-5 && stray == 0;
  std::printf("pair (%lld, %lld) x %lld scheme %d batch %lld  max rel err %.3g, stray %lld  %s\n", (long long)n1,
              (long long)n2, (long long)k, scheme, (long long)batch, worst, (long long)stray, ok ? "ok" : "FAIL");
  return ok ? 0 : 1;
}

// The routed experts grouped by expert: E random experts (two matrix sets, W1 and W3 [n, k], as w1
// and w3 in one launch), slot s of token s / x_div routed to experts[s]; k::group_experts, then
// both GEMVs with x rows by slot, then W1 again with x in grouped order. Checks pos_of (a stable
// sort by expert), every grouped row of both outputs against the CPU, and that rows past the slots
// stay NaN.
int check_expert_jobs(int scheme, int64_t E, int64_t n, int64_t k, int64_t x_div, const std::vector<int32_t>& experts,
                      std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  const int64_t slots = int64_t(experts.size()), tokens = (slots + x_div - 1) / x_div;
  std::vector<std::vector<uint8_t>> q(size_t(2 * E)), sc(size_t(2 * E));
  std::vector<Matrix> mats;
  std::vector<std::unique_ptr<cuda::DeviceMatrix>> dev;
  std::vector<cuda::MatrixView> v1, v3;
  for (int64_t i = 0; i < 2 * E; ++i) {
    mats.push_back(random_matrix(scheme, n, k, q[size_t(i)], sc[size_t(i)], rng));
    dev.push_back(std::make_unique<cuda::DeviceMatrix>(cuda::view_of(mats.back())));
    (i < E ? v1 : v3).push_back(dev.back()->view());
  }
  std::vector<float> x(size_t(tokens * k));
  for (auto& v : x) v = normal(rng);
  const int64_t extra = 3;  // rows past the slots: must stay NaN
  std::vector<float> y1(size_t((slots + extra) * n), std::nanf("")), y3 = y1, yg = y1;
  cuda::MatrixView *d1 = nullptr, *d3 = nullptr;
  int32_t *dexp = nullptr, *dpos = nullptr, *djobs = nullptr;
  float *dx = nullptr, *dy1 = nullptr, *dy3 = nullptr, *dxg = nullptr, *dyg = nullptr;
  bool ok_alloc = cudaMalloc(&d1, size_t(E) * sizeof(cuda::MatrixView)) == cudaSuccess &&
                  cudaMalloc(&d3, size_t(E) * sizeof(cuda::MatrixView)) == cudaSuccess &&
                  cudaMalloc(&dexp, size_t(slots) * 4) == cudaSuccess && cudaMalloc(&dpos, size_t(slots) * 4) == cudaSuccess &&
                  cudaMalloc(&djobs, size_t(slots) * 16) == cudaSuccess && cudaMalloc(&dx, x.size() * 4) == cudaSuccess &&
                  cudaMalloc(&dy1, y1.size() * 4) == cudaSuccess && cudaMalloc(&dy3, y1.size() * 4) == cudaSuccess &&
                  cudaMalloc(&dxg, size_t(slots * k) * 4) == cudaSuccess && cudaMalloc(&dyg, y1.size() * 4) == cudaSuccess;
  if (!ok_alloc) return 1;
  cudaMemcpy(d1, v1.data(), size_t(E) * sizeof(cuda::MatrixView), cudaMemcpyHostToDevice);
  cudaMemcpy(d3, v3.data(), size_t(E) * sizeof(cuda::MatrixView), cudaMemcpyHostToDevice);
  cudaMemcpy(dexp, experts.data(), size_t(slots) * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dy1, y1.data(), y1.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dy3, y1.data(), y1.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dyg, y1.data(), y1.size() * 4, cudaMemcpyHostToDevice);
  // The expected grouping: slots sorted by expert, stably.
  std::vector<int32_t> want_pos(static_cast<size_t>(slots));
  {
    int32_t r = 0;
    for (int64_t e = 0; e < E; ++e)
      for (int64_t i = 0; i < slots; ++i)
        if (experts[size_t(i)] == e) want_pos[size_t(i)] = r++;
  }
  // x in grouped order, for the second form (x rows at the grouped rows).
  std::vector<float> xg(size_t(slots * k));
  for (int64_t i = 0; i < slots; ++i)
    std::copy_n(x.begin() + (i / x_div) * k, k, xg.begin() + want_pos[size_t(i)] * k);
  cudaMemcpy(dxg, xg.data(), xg.size() * 4, cudaMemcpyHostToDevice);
  cuda::k::group_experts(dexp, slots, E, x_div, dpos, djobs, nullptr);
  cuda::k::expert_gemv_jobs(d1, dy1, d3, dy3, mats[0].index() == 3 ? cuda::MatrixView::Fp4Group : cuda::MatrixView::Fp8Block,
                            n, k, djobs, slots, dx, true, nullptr);
  cuda::k::expert_gemv_jobs(d1, dyg, nullptr, nullptr,
                            mats[0].index() == 3 ? cuda::MatrixView::Fp4Group : cuda::MatrixView::Fp8Block, n, k, djobs,
                            slots, dxg, false, nullptr);
  std::vector<int32_t> pos(static_cast<size_t>(slots));
  bool ran = cudaMemcpy(pos.data(), dpos, pos.size() * 4, cudaMemcpyDeviceToHost) == cudaSuccess;
  ran = ran && cudaMemcpy(y1.data(), dy1, y1.size() * 4, cudaMemcpyDeviceToHost) == cudaSuccess;
  ran = ran && cudaMemcpy(y3.data(), dy3, y3.size() * 4, cudaMemcpyDeviceToHost) == cudaSuccess;
  ran = ran && cudaMemcpy(yg.data(), dyg, yg.size() * 4, cudaMemcpyDeviceToHost) == cudaSuccess;
  for (void* p : std::initializer_list<void*>{d1, d3, dexp, dpos, djobs, dx, dy1, dy3, dxg, dyg}) cudaFree(p);
  double worst = ran ? 0 : 1;
  int64_t stray = 0, bad_pos = pos == want_pos ? 0 : 1;
  std::vector<float> row(static_cast<size_t>(k));
  for (int which = 0; which < 3; ++which) {
    const std::vector<float>& y = which == 0 ? y1 : which == 1 ? y3 : yg;
    for (int64_t r = slots * n; r < (slots + extra) * n; ++r) stray += !std::isnan(y[size_t(r)]);
    for (int64_t i = 0; i < slots; ++i) {
      const Matrix& m = mats[size_t(experts[size_t(i)] + (which == 1 ? E : 0))];
      const int64_t g = want_pos[size_t(i)];
      for (int64_t r = 0; r < n; ++r) {
        std::visit([&](const auto& w) { w.decode_row(r, row.data()); }, m);
        double ref = 0, mag = 0;
        for (int64_t c = 0; c < k; ++c) {
          const double t = double(row[size_t(c)]) * x[size_t((i / x_div) * k + c)];
          ref += t, mag += std::fabs(t);
        }
        const double err = std::fabs(ref - y[size_t(g * n + r)]) / (mag + 1e-30);
        if (!(err <= worst)) worst = err;
      }
    }
  }
  const bool ok = worst < 1e-5 && stray == 0 && bad_pos == 0;
  std::printf("expert jobs scheme %d E %lld (%lld x %lld) slots %lld x_div %lld  max rel err %.3g, stray %lld, pos %s  %s\n",
              scheme, (long long)E, (long long)n, (long long)k, (long long)slots, (long long)x_div, worst,
              (long long)stray, bad_pos ? "wrong" : "ok", ok ? "ok" : "FAIL");
  return ok ? 0 : 1;
}

// k::argmax_rows against dsv4::argmax's rule (the largest, ties to the lowest index, NaN ignored,
// 0 for a row of NaN): rows with ties across chunks, NaN, -inf only, widths not multiples of a chunk.
int check_argmax(int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_int_distribution<int64_t> col(0, cols - 1);
  std::vector<float> x(size_t(rows * cols));
  for (auto& v : x) v = normal(rng);
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = x.data() + r * cols;
    switch (r % 4) {
      case 1: {  // the maximum twice, far apart
        const int64_t a = col(rng), b = col(rng);
        xr[a] = xr[b] = 50.f;
        break;
      }
      case 2:  // NaN everywhere but one value
        for (int64_t c = 0; c < cols; ++c) xr[c] = std::nanf("");
        xr[col(rng)] = -3.f;
        break;
      case 3:  // -inf everywhere (index 0), the last row all NaN (0 too)
        for (int64_t c = 0; c < cols; ++c) xr[c] = r + 1 == rows ? std::nanf("") : -INFINITY;
        break;
      default: break;
    }
  }
  const int64_t chunks = cuda::k::argmax_chunks(cols);
  float *dx = nullptr, *dv = nullptr;
  int32_t *di = nullptr, *dids = nullptr;
  if (cudaMalloc(&dx, x.size() * 4) != cudaSuccess || cudaMalloc(&dv, size_t(rows * chunks) * 4) != cudaSuccess ||
      cudaMalloc(&di, size_t(rows * chunks) * 4) != cudaSuccess || cudaMalloc(&dids, size_t(rows) * 4) != cudaSuccess)
    return 1;
  cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice);
  cuda::k::argmax_rows(dx, rows, cols, dv, di, dids, nullptr);
  std::vector<int32_t> ids(size_t(rows), -1);
  const bool ran = cudaMemcpy(ids.data(), dids, ids.size() * 4, cudaMemcpyDeviceToHost) == cudaSuccess;
  for (void* p : std::initializer_list<void*>{dx, dv, di, dids}) cudaFree(p);
  int64_t wrong = ran ? 0 : rows;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x.data() + r * cols;
    float m = -INFINITY;
    int32_t want = 0;
    for (int64_t c = 0; c < cols; ++c) m = xr[c] > m ? xr[c] : m;
    for (int64_t c = 0; c < cols; ++c)
      if (xr[c] == m) {
        want = int32_t(c);
        break;
      }
    wrong += ids[size_t(r)] != want;
  }
  std::printf("argmax %lld x %lld  wrong rows %lld  %s\n", (long long)rows, (long long)cols, (long long)wrong,
              wrong ? "FAIL" : "ok");
  return wrong ? 1 : 0;
}

// k::route (top-k of sqrt(softplus(l)) + bias) against the CPU routers' order (HigherScore: ties to
// the lower index, NaN below every number): plain rows, rows with some NaN logits, rows all NaN
// (experts 0..k-1), rows of ties. Every id must be in range and distinct.
int check_route(int64_t t, int64_t E, int64_t k, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 2.f);
  std::uniform_int_distribution<int64_t> pick(0, E - 1);
  std::vector<float> l(size_t(t * E)), bias(static_cast<size_t>(E));
  for (auto& v : l) v = normal(rng);
  for (int64_t e = 0; e < E; ++e) bias[size_t(e)] = e % 3 ? 0.f : 0.25f;  // two values: the tie rows tie
  for (int64_t r = 0; r < t; ++r) {
    float* lr = l.data() + r * E;
    if (r % 4 == 1)
      for (int i = 0; i < 5; ++i) lr[pick(rng)] = std::nanf("");
    if (r % 4 == 2)
      for (int64_t e = 0; e < E; ++e) lr[e] = std::nanf("");
    if (r % 4 == 3)
      for (int64_t e = 0; e < E; ++e) lr[e] = 1.f;
  }
  float *dl = nullptr, *db = nullptr, *dw = nullptr;
  int32_t* de = nullptr;
  if (cudaMalloc(&dl, l.size() * 4) != cudaSuccess || cudaMalloc(&db, bias.size() * 4) != cudaSuccess ||
      cudaMalloc(&dw, size_t(t * k) * 4) != cudaSuccess || cudaMalloc(&de, size_t(t * k) * 4) != cudaSuccess)
    return 1;
  cudaMemcpy(dl, l.data(), l.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(db, bias.data(), bias.size() * 4, cudaMemcpyHostToDevice);
  cuda::k::route(dl, nullptr, nullptr, db, t, E, k, 1.5f, de, dw, nullptr);
  std::vector<int32_t> got(size_t(t * k), -1);
  const bool ran = cudaMemcpy(got.data(), de, got.size() * 4, cudaMemcpyDeviceToHost) == cudaSuccess;
  for (void* p : std::initializer_list<void*>{dl, db, dw, de}) cudaFree(p);
  int64_t wrong = ran ? 0 : t;
  std::vector<float> biased(static_cast<size_t>(E));
  std::vector<int64_t> idx(static_cast<size_t>(E));
  for (int64_t r = 0; r < t; ++r) {
    for (int64_t e = 0; e < E; ++e) {
      const float x = l[size_t(r * E + e)];
      biased[size_t(e)] = std::sqrt(x > 20.f ? x : std::log1p(std::exp(x))) + bias[size_t(e)];
    }
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), HigherScore{biased.data()});
    // Plain rows: the device's softplus may differ from the host's in the last bit, so an id may
    // differ only where its score equals the expected one's to 1e-5 (a near tie).
    bool bad = false;
    for (int64_t j = 0; j < k; ++j) {
      const int32_t g = got[size_t(r * k + j)];
      if (g < 0 || g >= E) {
        bad = true;
        continue;
      }
      for (int64_t q = 0; q < j; ++q) bad |= got[size_t(r * k + q)] == g;
      const float want = biased[size_t(idx[size_t(j)])], have = biased[size_t(g)];
      if (r % 4 < 2) bad |= g != idx[size_t(j)] && !(std::fabs(want - have) <= 1e-5f * (std::fabs(want) + 1.f));
      else bad |= g != idx[size_t(j)];
    }
    wrong += bad;
  }
  std::printf("route %lld rows, E %lld, k %lld (NaN and tied rows)  wrong rows %lld  %s\n", (long long)t, (long long)E,
              (long long)k, (long long)wrong, wrong ? "FAIL" : "ok");
  return wrong ? 1 : 0;
}

// The indexer's top-k selection (k::indexer_select) against HigherScore on the host: rows of 0 to
// topk entries (all taken), rows with ties, NaN, -inf and +-0 scores at the threshold, and rows
// longer than the kernel's shared-memory keys (the scores read each pass). Expects the chosen ids
// in ascending order.
int check_indexer_select(std::mt19937& rng) {
  const int64_t m = 4, topk = 37;
  const std::vector<int64_t> visible{0, 5, 37, 38, 64, 300, 300, 300, 1000, 20000};
  const int64_t t = int64_t(visible.size()), ld = 20000;
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_int_distribution<int> small(-2, 2);
  std::vector<float> sc(size_t(t * ld), 0.f);
  std::vector<cuda::k::RowInfo> rows(static_cast<size_t>(t));
  for (int64_t r = 0; r < t; ++r) {
    rows[size_t(r)] = {0, int32_t(visible[size_t(r)] * m), 0, 0, 1};  // (pos + 1) / m visible
    for (int64_t e = 0; e < visible[size_t(r)]; ++e) {
      float& v = sc[size_t(r * ld + e)];
      v = normal(rng);
      if (r == 5) v = float(small(rng));  // many ties across the threshold
      if (r == 6) v = e % 3 == 0 ? std::nanf("") : e % 3 == 1 ? -INFINITY : normal(rng) > 1.5f ? 1.f : -INFINITY;
      if (r == 7) v = e % 2 ? 0.f : -0.f;  // -0 ties +0
      if (r == 9 && e % 7 == 0) v = 4.f;  // a long row (the global path): ~2858 tied above the rest
    }
  }
  float* ds = nullptr;
  cuda::k::RowInfo* dr = nullptr;
  int32_t *dc = nullptr, *dn = nullptr;
  if (cudaMalloc(&ds, sc.size() * 4) != cudaSuccess || cudaMalloc(&dr, rows.size() * sizeof(rows[0])) != cudaSuccess ||
      cudaMalloc(&dc, size_t(t * topk) * 4) != cudaSuccess || cudaMalloc(&dn, size_t(t) * 4) != cudaSuccess)
    return 1;
  cudaMemcpy(ds, sc.data(), sc.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dr, rows.data(), rows.size() * sizeof(rows[0]), cudaMemcpyHostToDevice);
  cudaMemset(dc, 0xFF, size_t(t * topk) * 4);
  cuda::k::indexer_select(ds, ld, dr, t, m, topk, dc, dn, nullptr);
  std::vector<int32_t> got(static_cast<size_t>(t * topk)), gotn(static_cast<size_t>(t));
  bool ran = cudaMemcpy(got.data(), dc, got.size() * 4, cudaMemcpyDeviceToHost) == cudaSuccess;
  ran = ran && cudaMemcpy(gotn.data(), dn, gotn.size() * 4, cudaMemcpyDeviceToHost) == cudaSuccess;
  for (void* p : std::initializer_list<void*>{ds, dr, dc, dn}) cudaFree(p);
  int64_t wrong = ran ? 0 : t;
  for (int64_t r = 0; ran && r < t; ++r) {
    const int64_t n = visible[size_t(r)], keep = std::min(n, topk);
    std::vector<int64_t> idx(static_cast<size_t>(n));
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + keep, idx.end(), HigherScore{sc.data() + r * ld});
    idx.resize(size_t(keep));
    std::sort(idx.begin(), idx.end());
    bool bad = gotn[size_t(r)] != keep;
    for (int64_t j = 0; j < keep; ++j) bad |= got[size_t(r * topk + j)] != idx[size_t(j)];
    wrong += bad;
  }
  std::printf("indexer top-%lld of 0..20000 entries (ties, NaN, -inf, -0)  wrong rows %lld  %s\n", (long long)topk,
              (long long)wrong, wrong ? "FAIL" : "ok");
  return wrong ? 1 : 0;
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
  // The tensor-core path (FP8 scheme 2, FP4 scheme 3) and, after it, the earlier FMA kernels.
  for (const bool legacy : {false, true}) {
    cuda::set_legacy_gemv(legacy);
    for (int scheme = 2; scheme < 4; ++scheme) {
      for (int64_t batch : {1, 2, 3, 8}) failures += check_scheme(scheme, 1031, 4096, batch, rng, {128});
      if (legacy) continue;
      // Row counts for 1..8 warps an item, partial last items.
      for (int64_t batch : {1, 8}) failures += check_scheme(scheme, 9001, 1024, batch, rng, {128});
      for (int64_t batch : {1, 8}) failures += check_scheme(scheme, 17003, 1024, batch, rng, {128});
      // K not a multiple of 128 (a partial K chunk, FP4 scale rows not word-aligned, a partial FP8 tile).
      for (int64_t batch : {2, 5}) failures += check_scheme(scheme, 300, 4000, batch, rng, {128});
      // x of a wide dynamic range, E8M0 scales down to 0 (2^-127).
      failures += check_scheme(scheme, 700, 2048, 1, rng, {128, 0, 135, true});
      failures += check_scheme(scheme, 700, 2048, 7, rng, {128, 0, 135, true});
      // E8M0 0xFF scales and E4M3 NaN codes give NaN, as the oracle (not +-inf).
      for (int64_t batch : {1, 8}) failures += check_scheme(scheme, 700, 2048, batch, rng, {128, 120, 130, false, true});
    }
  }
  cuda::set_legacy_gemv(false);
  // Grouped (block-diagonal) GEMVs: FP8/FP4 in one tensor-core launch, BF16 one launch a group; groups
  // of rows that are not a multiple of 16, K not a multiple of 128, batch chunks of 1..8 and 11.
  for (int scheme : {2, 3, 1})
    for (int64_t batch : {1, 3, 8, 11}) {
      failures += check_grouped(scheme, 8, 1024, 512, 512, 1024, batch, rng);
      failures += check_grouped(scheme, 3, 300, 4000, 4004, 301, batch, rng);
    }
  // Paired GEMVs of one x (one launch; row counts not a multiple of 16, K not of 128).
  for (int scheme : {2, 3})
    for (int64_t batch : {1, 3, 8, 11}) {
      failures += check_pair(scheme, 1024, 512, 4096, batch, rng);
      failures += check_pair(scheme, 300, 517, 4000, batch, rng);
    }
  // Routed experts grouped by expert: uneven groups (experts with 0, 1, 2, 3 and 5 slots), one
  // expert for every slot, all distinct; rows not a multiple of 16, K not of 128.
  {
    const std::vector<int32_t> uneven{4, 0, 4, 2, 4, 4, 0, 1, 4, 2, 2, 6};  // expert 3, 5 empty
    std::vector<int32_t> same(20, 3), distinct(12);
    for (size_t i = 0; i < distinct.size(); ++i) distinct[i] = int32_t((i * 5) % 13);
    for (int scheme : {3, 2}) {
      failures += check_expert_jobs(scheme, 7, 300, 4000, 3, uneven, rng);
      failures += check_expert_jobs(scheme, 7, 1024, 512, 2, uneven, rng);
      failures += check_expert_jobs(scheme, 5, 77, 256, 4, same, rng);
      failures += check_expert_jobs(scheme, 13, 520, 1024, 1, distinct, rng);
      failures += check_expert_jobs(scheme, 13, 520, 1024, 6, std::vector<int32_t>{9}, rng);
    }
    // V4-Flash's decode shapes (six experts, w1/w3 and w2 shapes, both as pairs): the grid splits
    // K over several warps an item (4 for the 2048 x 4096 pair, 2 for 4096 x 2048) and a warp group
    // takes several items.
    const std::vector<int32_t> six{3, 0, 7, 5, 1, 6};
    failures += check_expert_jobs(3, 8, 2048, 4096, 6, six, rng);
    failures += check_expert_jobs(3, 8, 4096, 2048, 6, six, rng);
  }
  for (int64_t cols : {1, 31, 4096, 4097, 129280}) failures += check_argmax(8, cols, rng);
  for (int64_t E : {256, 67}) failures += check_route(12, E, 6, rng);
  failures += check_indexer_select(rng);
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
