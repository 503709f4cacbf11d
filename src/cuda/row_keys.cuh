// A row's attention keys in the order every attention kernel walks them (attend, attend_split,
// attend_tc), and the sliding window's ring store. One definition, so the kernels cannot drift.
#pragma once

#include <cstdint>

#include "kernels.hpp"

namespace dsv4::cuda::k {

// Keys of a row: its sliding window first (positions p_first .. pos: the rows of this forward from
// the segment's start, the ring before them), then the compressed entries (the first (pos+1)/m for
// HCA, the indexer's chosen ones for CSA). The sequence's ring and entries are loaded once here.
struct RowKeys {
  int64_t p_first, nwin, nk;
  const float* ring;     // [W-1, d]
  const float* entries;  // [n, d]
};

__device__ __forceinline__ RowKeys row_keys(const AttendArgs& a, const RowInfo& ri, int64_t row) {
  RowKeys k;
  k.p_first = max(int64_t(0), int64_t(ri.pos) - a.window + 1);
  k.nwin = ri.pos - k.p_first + 1;
  int64_t nextra = 0;
  if (a.hca_m > 0) nextra = (ri.pos + 1) / a.hca_m;
  else if (a.chosen) nextra = a.nchosen[row];
  k.nk = k.nwin + nextra;
  k.ring = a.seqs[ri.seq].ring;
  k.entries = a.seqs[ri.seq].entries;
  return k;
}

// Key i (< nk) of the row: a pointer to its d floats.
__device__ __forceinline__ const float* row_key(const AttendArgs& a, const RowInfo& ri, int64_t row, const RowKeys& k,
                                                int64_t i) {
  if (i < k.nwin) {
    const int64_t p = k.p_first + i;
    if (p >= ri.pos0) return a.kv + (ri.row0 + (p - ri.pos0)) * a.d;
    return k.ring + (p % (a.window - 1)) * a.d;
  }
  const int64_t e = a.hca_m > 0 ? i - k.nwin : a.chosen[row * a.topk + (i - k.nwin)];
  return k.entries + e * a.d;
}

// ring[pos mod ring] = kv [d] when the row is among its segment's last `ring` (W - 1) rows: the
// window keys later steps read from the ring. The block's threads share the copy.
__device__ __forceinline__ void store_window_row(const float* kv, const RowInfo& ri, const SeqLayerState* seqs, int64_t d,
                                                 int64_t ring) {
  if (ring <= 0 || ri.pos - ri.pos0 < ri.count - ring) return;
  float* dst = seqs[ri.seq].ring + (ri.pos % ring) * d;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) dst[j] = kv[j];
}

}  // namespace dsv4::cuda::k
