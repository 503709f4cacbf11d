#pragma once
// Threading: OpenMP when available, serial otherwise. The thread count is a runtime setting.
#include <algorithm>
#include <cstdint>
#if defined(_OPENMP)
#include <omp.h>
#endif

namespace dsv4 {

inline void set_num_threads(int n) {
#if defined(_OPENMP)
  if (n > 0) omp_set_num_threads(n);
#else
  (void)n;
#endif
}

inline int num_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Calls fn(i) for i in [0, n), split statically over the threads. fn must not throw.
template <class Fn>
void parallel_for(int64_t n, Fn&& fn) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (n > 1)
  for (int64_t i = 0; i < n; ++i) fn(i);
#else
  for (int64_t i = 0; i < n; ++i) fn(i);
#endif
}

// Calls fn(n0, n1) for pieces [n0, n1) covering [row0, row1), about 8 per thread and a multiple
// of `align` rows, each handed to a thread as it becomes free: with a static half each, one thread
// sits idle whenever the other is slowed, which on a shared machine is often.
template <class Fn>
void parallel_row_pieces(int64_t row0, int64_t row1, int64_t align, int threads, Fn&& fn) {
  const int64_t rows = row1 - row0;
  const int64_t piece = std::max<int64_t>(align, (rows / (8 * threads) + align - 1) / align * align);
  const int64_t pieces = (rows + piece - 1) / piece;
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1)
#endif
  for (int64_t p = 0; p < pieces; ++p) fn(row0 + p * piece, std::min(row1, row0 + (p + 1) * piece));
}

// Calls fn(b0, b1) once on each of `threads` threads with its contiguous share [b0, b1) of
// [0, blocks): a static split, for kernels that pass each thread's rows over several tiles of
// tokens or columns and want the same rows on the same thread every time.
template <class Fn>
void parallel_block_shares(int64_t blocks, int threads, Fn&& fn) {
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int64_t nthreads = omp_get_num_threads(), me = omp_get_thread_num();
    fn(blocks * me / nthreads, blocks * (me + 1) / nthreads);
  }
#else
  (void)threads;
  fn(int64_t(0), blocks);
#endif
}

}  // namespace dsv4
