#pragma once
// Token compressor: pools each window of m tokens into one entry of width c.
// Non-overlapping (HCA): softmax over the window's m gates, per channel.
// Overlapping (CSA attention and the Lightning Indexer): each token projects 2c values; the
// A half (first c) feeds the next window, the B half (last c) the current one, so entry w pools
// window w-1's A halves and window w's B halves (2m slots; window 0 has only its m B slots).
// Entries are RMS-normed and roped (compress table) at position w*m once their window completes.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "dsv4/attention/kv_rows.hpp"
#include "dsv4/attention/segment.hpp"
#include "dsv4/io/weight_source.hpp"
#include "dsv4/kernels/bundle.hpp"
#include "dsv4/kernels/ops.hpp"
#include "dsv4/kernels/rope.hpp"

namespace dsv4 {

struct CompressorWeights {
  int64_t ratio = 0;     // m
  int64_t width = 0;     // c
  bool overlap = false;
  Matrix wkv;            // [w, D], w = c or 2c
  Matrix wgate;          // [w, D]
  std::vector<float> ape;   // [m, w]
  std::vector<float> norm;  // [c]

  int64_t proj_width() const { return overlap ? 2 * width : width; }

  static CompressorWeights load(const WeightSource& ws, const std::string& prefix, int64_t ratio, int64_t width,
                                bool overlap, int64_t hidden) {
    CompressorWeights c;
    c.ratio = ratio;
    c.width = width;
    c.overlap = overlap;
    const int64_t w = c.proj_width();
    c.wkv = ws.matrix(prefix + ".wkv", w, hidden);
    c.wgate = ws.matrix(prefix + ".wgate", w, hidden);
    c.ape = ws.floats(prefix + ".ape", {ratio, w});
    c.norm = ws.floats(prefix + ".norm.weight", {width});
    return c;
  }
};

// Per-sequence state: the incomplete window, the previous window's A halves, the entries.
struct CompressorState {
  std::vector<float> pend_a, pend_z;  // [m, w] tokens of the window being filled (slot = pos mod m)
  std::vector<float> prev_a, prev_z;  // [m, c] A halves and gates of the last complete window
  KvRows entries;                     // [num_entries, c] in the cache type's format for these rows

  int64_t num_entries() const { return entries.size(); }
  // Whether an overlapping compressor has a complete window before the one being filled: every
  // complete window made an entry.
  bool has_prev() const { return !prev_a.empty() && num_entries() > 0; }

  void init(const CompressorWeights& w, const RowCodec& entry_codec) {
    pend_a.assign(size_t(w.ratio * w.proj_width()), 0.f);
    pend_z.assign(pend_a.size(), 0.f);
    if (w.overlap) {
      prev_a.assign(size_t(w.ratio * w.width), 0.f);
      prev_z.assign(prev_a.size(), 0.f);
    }
    entries.init_growing(entry_codec);
  }
};

// Projects all rows of the batch: a, z: [T, w], z including the positional bias ape[pos mod m].
template <KernelBundle B>
void compressor_project(const CompressorWeights& w, const float* x /*[T, D]*/, int64_t t,
                        const std::vector<Segment>& segs, std::vector<float>& a, std::vector<float>& z) {
  const int64_t pw = w.proj_width();
  a.resize(size_t(t * pw));
  z.resize(size_t(t * pw));
  linear<B>(w.wkv, x, t, a.data());
  linear<B>(w.wgate, x, t, z.data());
  for (auto& s : segs)
    for (int64_t i = 0; i < s.count; ++i) {
      const float* ape = w.ape.data() + ((s.pos0 + i) % w.ratio) * pw;
      float* zi = z.data() + (s.row0 + i) * pw;
      for (int64_t j = 0; j < pw; ++j) zi[j] += ape[j];
    }
}

// Feeds one segment's projected tokens (a, z rows [count, w], positions pos0...) into the state,
// appending an entry for every window that completes.
inline void compressor_feed(const CompressorWeights& w, CompressorState& st, const float* a, const float* z,
                            int64_t count, int64_t pos0, const RopeTable& rope, float eps) {
  const int64_t m = w.ratio, c = w.width, pw = w.proj_width();
  std::vector<float> entry(static_cast<size_t>(c));
  for (int64_t i = 0; i < count; ++i) {
    const int64_t pos = pos0 + i, slot = pos % m;
    std::copy(a + i * pw, a + (i + 1) * pw, st.pend_a.begin() + slot * pw);
    std::copy(z + i * pw, z + (i + 1) * pw, st.pend_z.begin() + slot * pw);
    if (slot != m - 1) continue;
    // Window complete: softmax per channel over its slots.
    const int64_t b_off = w.overlap ? c : 0;  // where the current window's half starts
    const bool prev = st.has_prev();            // only an overlapping compressor keeps the previous window
    for (int64_t ch = 0; ch < c; ++ch) {
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t s = 0; s < m; ++s) mx = std::max(mx, st.pend_z[size_t(s * pw + b_off + ch)]);
      if (prev)
        for (int64_t s = 0; s < m; ++s) mx = std::max(mx, st.prev_z[size_t(s * c + ch)]);
      float den = 0.f, num = 0.f;
      for (int64_t s = 0; s < m; ++s) {
        float e = std::exp(st.pend_z[size_t(s * pw + b_off + ch)] - mx);
        den += e;
        num += e * st.pend_a[size_t(s * pw + b_off + ch)];
      }
      if (prev)
        for (int64_t s = 0; s < m; ++s) {
          float e = std::exp(st.prev_z[size_t(s * c + ch)] - mx);
          den += e;
          num += e * st.prev_a[size_t(s * c + ch)];
        }
      entry[size_t(ch)] = num / den;
    }
    if (w.overlap) {
      for (int64_t s = 0; s < m; ++s) {
        std::copy_n(st.pend_a.begin() + s * pw, c, st.prev_a.begin() + s * c);
        std::copy_n(st.pend_z.begin() + s * pw, c, st.prev_z.begin() + s * c);
      }
    }
    rms_norm(entry.data(), w.norm.data(), c, eps, entry.data());
    const int64_t index = pos / m;
    rope.apply(entry.data(), c, index * m);
    st.entries.append(entry.data());
  }
}

}  // namespace dsv4
