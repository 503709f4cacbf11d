#pragma once
// Threading: OpenMP when available, serial otherwise. The thread count is a runtime setting.
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

}  // namespace dsv4
