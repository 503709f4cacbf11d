#pragma once
// The order in which the few-token FP4 kernel (fp4_integer.hpp) visits a thread's rows: groups of
// rows whose accumulators stay in a buffer; within a group, K tiles whose activations stay in L1;
// within a tile, passes of R rows. Each pass is told which weights to prefetch. (fp8_vbmi.hpp
// spells the same walk out: its passes carry a target attribute, and GCC 12 then calls each one
// out of line through the lambdas, even lambdas with the attribute; at 8 tokens FP8 read
// 4.1-5.0 against 5.1-5.6 GB/s in one noisy bench_kernels sitting.)
#include <algorithm>
#include <cstdint>

namespace dsv4::cpu {

// Rows [n0, n1) in groups of `group_rows`, K units [0, kend) in tiles of `tile`, passes of R rows:
//   pass(g, n, nr, k0, k1, pn, pk): rows n..n+nr-1 (nr <= R) of group g over units [k0, k1); (pn, pk) is the
//     row and K unit that the pass ahead_rows rows later reads (further rows of this tile, else the
//     next tile's or the next group's first rows), for software prefetch;
//   done(g, g1): after the last tile of group [g, g1).
template <int R, class Pass, class Done>
inline void walk_row_tiles(int64_t n0, int64_t n1, int64_t group_rows, int64_t kend, int64_t tile,
                           int64_t ahead_rows, Pass&& pass, Done&& done) {
  for (int64_t g = n0; g < n1; g += group_rows) {
    const int64_t g1 = std::min(n1, g + group_rows);
    for (int64_t k0 = 0; k0 < kend; k0 += tile) {
      const int64_t k1 = std::min(kend, k0 + tile);
      for (int64_t n = g; n < g1; n += R) {
        const int64_t ahead = n + ahead_rows;
        const int64_t pn = ahead < g1 ? ahead : k1 < kend ? g + (ahead - g1) : ahead;
        const int64_t pk = ahead < g1 ? k0 : k1 < kend ? k1 : 0;
        pass(g, n, int(std::min<int64_t>(R, g1 - n)), k0, k1, pn, pk);
      }
    }
    done(g, g1);
  }
}

}  // namespace dsv4::cpu
