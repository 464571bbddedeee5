#pragma once
// Threading for CPU kernels. With OpenMP, work is split into contiguous chunks over the
// available threads; without it everything runs on the calling thread, with the same results.
#include <algorithm>
#include <cstdint>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace vox::kernels::cpu {

inline int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline void set_num_threads(int n) {
#ifdef _OPENMP
  omp_set_num_threads(std::max(1, n));
#else
  (void)n;
#endif
}

// Calls fn(b, e) on disjoint sub-ranges covering [begin, end), each at least `grain` long where
// possible. Nested calls run serially on the calling thread. fn must not throw.
template <class F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, F&& fn) {
  const int64_t n = end - begin;
  if (n <= 0) return;
#ifdef _OPENMP
  const int64_t chunks = std::min<int64_t>(num_threads(), (n + std::max<int64_t>(grain, 1) - 1) / std::max<int64_t>(grain, 1));
  if (chunks > 1 && !omp_in_parallel()) {
#pragma omp parallel num_threads(static_cast<int>(chunks))
    {
      const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t b = begin + n * t / nt, e = begin + n * (t + 1) / nt;
      if (b < e) fn(b, e);
    }
    return;
  }
#endif
  fn(begin, end);
}

// Splits [0, n) into a number of chunks that depends only on n and grain (never on the thread
// count), and calls fn(chunk, b, e) for each, in parallel. Reductions that keep one partial
// result per chunk therefore give bit-identical results on any number of threads.
inline int64_t chunk_count(int64_t n, int64_t grain, int64_t max_chunks = 64) {
  return std::clamp<int64_t>((n + std::max<int64_t>(grain, 1) - 1) / std::max<int64_t>(grain, 1), 1, max_chunks);
}

template <class F>
void parallel_chunks(int64_t n, int64_t chunks, F&& fn) {
  parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) fn(c, n * c / chunks, n * (c + 1) / chunks);
  });
}

}  // namespace vox::kernels::cpu
