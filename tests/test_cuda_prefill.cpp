// The fast-mode prefill kernels (src/cuda/prefill.cu) against plain CPU references: the tensor-core
// attention (windows with ring keys from an earlier chunk, window 1, HCA entries, CSA chosen entries,
// heads not a multiple of 64, head dims padded to 64/128/512, rows with a partial last key tile,
// two sequences in one launch), also the exact kernel on the same input; and the grouped expert
// GEMM (experts with 0, 1, 63, 64, 65 and 130 rows, N not a multiple of 128, K not a multiple of the
// 64-column chunk, FP4 through the shared-memory decode, FP8 and odd-K FP4 through the scalar one).
// Outputs start as NaN, so that unwritten and stray elements show. Exits 77 (ctest SKIP) without a GPU.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include <cuda_runtime.h>

#include "dsv4/cuda/gemv.hpp"
#include "../src/cuda/kernels.hpp"

using namespace dsv4;

namespace {

template <class T>
T* upload(const std::vector<T>& v) {
  T* p = nullptr;
  if (cudaMalloc(&p, std::max<size_t>(v.size(), 1) * sizeof(T)) != cudaSuccess) return nullptr;
  cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
  return p;
}
template <class T>
std::vector<T> download(const T* p, size_t n) {
  std::vector<T> v(n);
  cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
  return v;
}

struct Seq {
  int64_t pos0, count;  // rows of this forward: positions [pos0, pos0 + count)
};

// Attention of the rows of `seqs` (H heads of width d, rope r, window W; hca_m > 0: HCA entries;
// topk > 0: CSA chosen entries) by attend_tc and attend against the CPU reference.
int check_attention(const char* name, int64_t H, int64_t d, int64_t r, int64_t W, int64_t hca_m, int64_t topk,
                    const std::vector<Seq>& seqs, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  const int64_t B = int64_t(seqs.size());
  std::vector<cuda::k::RowInfo> rows;
  for (int64_t b = 0; b < B; ++b) {
    const int32_t row0 = int32_t(rows.size());
    for (int64_t i = 0; i < seqs[size_t(b)].count; ++i)
      rows.push_back({int32_t(b), int32_t(seqs[size_t(b)].pos0 + i), row0, int32_t(seqs[size_t(b)].pos0),
                      int32_t(seqs[size_t(b)].count)});
  }
  const int64_t T = int64_t(rows.size()), ring_n = std::max<int64_t>(W - 1, 1), nent = 64;
  auto randv = [&](int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = normal(rng);
    return v;
  };
  const std::vector<float> q = randv(T * H * d), kv = randv(T * d), sink = randv(H);
  std::vector<std::vector<float>> ring, ent;
  std::vector<float*> dring, dent;
  std::vector<cuda::k::SeqLayerState> states(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    ring.push_back(randv(ring_n * d)), ent.push_back(randv(nent * d));
    dring.push_back(upload(ring.back())), dent.push_back(upload(ent.back()));
    states[size_t(b)] = {};
    states[size_t(b)].ring = dring.back(), states[size_t(b)].entries = dent.back();
  }
  std::vector<float> inv_freq(static_cast<size_t>(r / 2));
  for (int64_t i = 0; i < r / 2; ++i) inv_freq[size_t(i)] = float(std::pow(10000.0, -2.0 * double(i) / double(r)));
  // CSA: each row's chosen entries (distinct, in random order), up to topk of those visible.
  std::vector<int32_t> chosen(static_cast<size_t>(T * std::max<int64_t>(topk, 1))), nchosen(static_cast<size_t>(T));
  int64_t max_keys = 0;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t pos = rows[size_t(t)].pos, vis = std::min<int64_t>(nent, (pos + 1) / 4);
    std::vector<int32_t> all(static_cast<size_t>(vis));
    for (int64_t i = 0; i < vis; ++i) all[size_t(i)] = int32_t(i);
    std::shuffle(all.begin(), all.end(), rng);
    nchosen[size_t(t)] = int32_t(std::min(vis, topk));
    for (int64_t i = 0; i < nchosen[size_t(t)]; ++i) chosen[size_t(t * topk + i)] = all[size_t(i)];
    const int64_t extra = hca_m > 0 ? (pos + 1) / hca_m : topk > 0 ? nchosen[size_t(t)] : 0;
    max_keys = std::max(max_keys, std::min(W, pos + 1) + extra);
  }
  float *dq = upload(q), *dkv = upload(kv), *dsink = upload(sink), *dfreq = upload(inv_freq);
  auto* drows = upload(rows);
  auto* dstates = upload(states);
  int32_t *dch = upload(chosen), *dnch = upload(nchosen);
  const std::vector<float> poison(size_t(T * H * d), std::nanf(""));
  float *dout = upload(poison), *dout2 = upload(poison);
  cuda::k::AttendArgs a{};
  a.q = dq, a.kv = dkv, a.rows = drows, a.seqs = dstates, a.sink = dsink;
  a.t = T, a.heads = H, a.d = d, a.window = W, a.hca_m = hca_m;
  if (topk > 0) a.chosen = dch, a.nchosen = dnch, a.topk = topk;
  a.max_keys = max_keys, a.scale = 1.0f / std::sqrt(float(d)), a.rope = {dfreq, int32_t(r)};
  int failures = 0;
  if (!cuda::k::attend_tc_ok(a)) {
    std::printf("attention %-10s: attend_tc_ok is false  FAIL\n", name);
    return 1;
  }
  a.o = dout;
  cuda::k::attend_tc(a, nullptr);
  a.o = dout2;
  cuda::k::attend(a, nullptr);
  const bool ran = cudaDeviceSynchronize() == cudaSuccess;
  const auto got = download(dout, poison.size()), exact = download(dout2, poison.size());
  // The reference, in double.
  double worst = ran ? 0 : 1, worst_exact = ran ? 0 : 1, mag = 0;
  std::vector<double> logit, o(static_cast<size_t>(d));
  for (int64_t t = 0; t < T; ++t) {
    const auto& ri = rows[size_t(t)];
    const int64_t pos = ri.pos, p_first = std::max<int64_t>(0, pos - W + 1);
    std::vector<const float*> keys;
    for (int64_t p = p_first; p <= pos; ++p)
      keys.push_back(p >= ri.pos0 ? &kv[size_t((ri.row0 + p - ri.pos0) * d)] : &ring[size_t(ri.seq)][size_t((p % ring_n) * d)]);
    if (hca_m > 0)
      for (int64_t e = 0; e < (pos + 1) / hca_m; ++e) keys.push_back(&ent[size_t(ri.seq)][size_t(e * d)]);
    if (topk > 0)
      for (int64_t i = 0; i < nchosen[size_t(t)]; ++i)
        keys.push_back(&ent[size_t(ri.seq)][size_t(chosen[size_t(t * topk + i)] * d)]);
    for (int64_t h = 0; h < H; ++h) {
      const float* qh = &q[size_t((t * H + h) * d)];
      logit.assign(keys.size(), 0);
      double mx = sink[size_t(h)];
      for (size_t i = 0; i < keys.size(); ++i) {
        double dot = 0;
        for (int64_t j = 0; j < d; ++j) dot += double(qh[j]) * keys[i][j];
        logit[i] = dot / std::sqrt(double(d));
        mx = std::max(mx, logit[i]);
      }
      double den = std::exp(sink[size_t(h)] - mx);
      for (auto& l : logit) den += (l = std::exp(l - mx));
      std::fill(o.begin(), o.end(), 0.0);
      for (size_t i = 0; i < keys.size(); ++i)
        for (int64_t j = 0; j < d; ++j) o[size_t(j)] += logit[i] / den * keys[i][j];
      for (int64_t i = 0; i < r / 2; ++i) {
        const double angle = double(float(pos) * inv_freq[size_t(i)]);
        const double c = std::cos(angle), s = std::sin(angle);
        double& x = o[size_t(d - r + 2 * i)];
        double& y = o[size_t(d - r + 2 * i + 1)];
        const double nx = x * c + y * s, ny = y * c - x * s;
        x = nx, y = ny;
      }
      for (int64_t j = 0; j < d; ++j) {
        const size_t at = size_t((t * H + h) * d + j);
        mag = std::max(mag, std::fabs(o[size_t(j)]));
        const double e = std::fabs(got[at] - o[size_t(j)]), ee = std::fabs(exact[at] - o[size_t(j)]);
        if (!(e <= worst)) worst = e;  // NaN (unwritten) counts as the worst
        if (!(ee <= worst_exact)) worst_exact = ee;
      }
    }
  }
  const double rel = worst / mag, rel_exact = worst_exact / mag;
  const bool ok = rel < 2e-4 && rel_exact < 1e-5;  // f16 hi + lo: ~22 bits
  std::printf("attention %-10s H=%lld d=%lld W=%lld rows=%lld max keys %lld: tensor-core max err %.3g (rel %.3g), "
              "exact %.3g  %s\n",
              name, (long long)H, (long long)d, (long long)W, (long long)T, (long long)max_keys, worst, rel, rel_exact,
              ok ? "ok" : "FAIL");
  failures += ok ? 0 : 1;
  for (void* p : std::initializer_list<void*>{dq, dkv, dsink, dfreq, drows, dstates, dch, dnch, dout, dout2}) cudaFree(p);
  for (auto* p : dring) cudaFree(p);
  for (auto* p : dent) cudaFree(p);
  return failures;
}

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

// group_slots + moe_tiles + moe_split + moe_gemm (two matrix sets in one launch) against the CPU:
// y [pos_of[s]] = W_e x [s / div] for slot s of expert e = counts' expert order, shuffled.
int check_moe(int scheme, int64_t n, int64_t k, int64_t div, const std::vector<int>& counts, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  const int64_t E = int64_t(counts.size());
  std::vector<int32_t> experts;
  for (int64_t e = 0; e < E; ++e) experts.insert(experts.end(), size_t(counts[size_t(e)]), int32_t(e));
  std::shuffle(experts.begin(), experts.end(), rng);
  const int64_t slots = int64_t(experts.size()), tokens = (slots + div - 1) / div;
  std::vector<std::vector<uint8_t>> q(size_t(2 * E)), sc(static_cast<size_t>(2 * E));
  std::vector<Matrix> mats;
  std::vector<std::unique_ptr<cuda::DeviceMatrix>> dev;
  std::vector<cuda::MatrixView> v0, v1;
  for (int64_t i = 0; i < 2 * E; ++i) {
    mats.push_back(random_matrix(scheme, n, k, q[size_t(i)], sc[size_t(i)], rng));
    dev.push_back(std::make_unique<cuda::DeviceMatrix>(cuda::view_of(mats.back())));
    (i < E ? v0 : v1).push_back(dev.back()->view());
  }
  std::vector<float> x(static_cast<size_t>(tokens * k));
  for (auto& v : x) v = normal(rng);
  const int64_t extra = 3, kp = cuda::k::moe_kpad(k), max_tiles = cuda::k::moe_max_tiles(slots, E);
  const std::vector<float> poison(size_t((slots + extra) * n), std::nanf(""));
  auto *d0 = upload(v0), *d1 = upload(v1);
  int32_t* dexp = upload(experts);
  float *dx = upload(x), *dy0 = upload(poison), *dy1 = upload(poison);
  int32_t *dcounts = nullptr, *doff = nullptr, *dpos = nullptr, *dtiles = nullptr;
  uint16_t *dh = nullptr, *dl = nullptr;
  if (cudaMalloc(&dcounts, size_t(E) * 4) || cudaMalloc(&doff, size_t(E + 1) * 4) || cudaMalloc(&dpos, size_t(slots) * 4) ||
      cudaMalloc(&dtiles, size_t(max_tiles) * 16) || cudaMalloc(&dh, size_t(slots * kp) * 2) ||
      cudaMalloc(&dl, size_t(slots * kp) * 2))
    return 1;
  cuda::k::group_slots(dexp, slots, E, dcounts, doff, dpos, nullptr);
  cuda::k::moe_tiles(doff, E, max_tiles, dtiles, nullptr);
  cuda::k::moe_split(dx, k, dpos, slots, div, k, dh, dl, nullptr);
  const bool fp4 = cuda::k::moe_fp4_ok(v0[0].kind, v0[0].group, k);
  cuda::k::moe_gemm(d0, dy0, d1, dy1, fp4, n, k, dtiles, max_tiles, dh, dl, nullptr);
  const bool ran = cudaDeviceSynchronize() == cudaSuccess;
  const auto y0 = download(dy0, poison.size()), y1 = download(dy1, poison.size());
  const auto pos = download(dpos, size_t(slots));
  for (void* p : std::initializer_list<void*>{d0, d1, dexp, dx, dy0, dy1, dcounts, doff, dpos, dtiles, dh, dl}) cudaFree(p);
  double worst = ran ? 0 : 1;
  int64_t stray = 0;
  std::vector<float> row(static_cast<size_t>(k));
  for (int which = 0; which < 2; ++which) {
    const std::vector<float>& y = which ? y1 : y0;
    for (int64_t i = slots * n; i < (slots + extra) * n; ++i) stray += !std::isnan(y[size_t(i)]);
    for (int64_t s = 0; s < slots; ++s) {
      const Matrix& m = mats[size_t(experts[size_t(s)] + (which ? E : 0))];
      for (int64_t rr = 0; rr < n; ++rr) {
        std::visit([&](const auto& w) { w.decode_row(rr, row.data()); }, m);
        double ref = 0, mag = 0;
        for (int64_t c = 0; c < k; ++c) {
          const double t = double(row[size_t(c)]) * x[size_t((s / div) * k + c)];
          ref += t, mag += std::fabs(t);
        }
        const double err = std::fabs(ref - y[size_t(pos[size_t(s)] * n + rr)]) / (mag + 1e-30);
        if (!(err <= worst)) worst = err;
      }
    }
  }
  const bool ok = worst < 1e-4 && stray == 0;
  std::printf("moe_gemm %s n=%lld k=%lld slots=%lld experts=%lld (%s decode): max rel err %.3g, stray %lld  %s\n",
              scheme == 2 ? "fp8" : "fp4", (long long)n, (long long)k, (long long)slots, (long long)E,
              fp4 ? "shared-memory" : "scalar", worst, (long long)stray, ok ? "ok" : "FAIL");
  return ok ? 0 : 1;
}

}  // namespace

int main() {
  if (!cuda::device_available()) {
    std::printf("SKIP: no CUDA device\n");
    return 77;
  }
  std::mt19937 rng(5);
  int failures = 0;
  // Sliding: a first chunk of 65 rows (the last key tile partial); then a second chunk whose
  // windows reach into the ring; window 1 (one key a row); heads 70 = a full and a partial block.
  failures += check_attention("sliding", 3, 40, 10, 7, 0, 0, {{0, 65}}, rng);
  failures += check_attention("ring", 64, 512, 64, 128, 0, 0, {{150, 97}}, rng);
  failures += check_attention("window1", 70, 64, 16, 1, 0, 0, {{10, 66}}, rng);
  // HCA entries (m 4: up to 40 extra keys), CSA chosen entries (top 37 of up to 64), two sequences.
  failures += check_attention("hca", 5, 128, 32, 12, 4, 0, {{0, 80}, {37, 123}}, rng);
  failures += check_attention("csa", 64, 512, 64, 128, 0, 37, {{100, 130}, {0, 67}}, rng);
  failures += check_attention("csa-d256", 16, 200, 24, 33, 0, 5, {{3, 300}}, rng);
  // Experts: 0, 1, 63, 64, 65, 130 and 3 rows; N not a multiple of 128; K with a partial 64-column chunk.
  const std::vector<int> uneven{0, 1, 63, 64, 65, 130, 3};
  failures += check_moe(3, 300, 4000, 2, uneven, rng);
  failures += check_moe(3, 2048, 512, 6, uneven, rng);
  failures += check_moe(3, 77, 200, 1, {5, 70, 0, 2}, rng);  // FP4, K not a multiple of 32: the scalar decode
  failures += check_moe(2, 77, 200, 3, uneven, rng);         // FP8 (partial scale tiles)
  failures += check_moe(2, 520, 1024, 1, {129}, rng);
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
