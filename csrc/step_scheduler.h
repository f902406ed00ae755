// Runs the steps of a recurrence in order, each step's hidden columns split over an
// OpenMP team when the step is big enough.
//
// Columns (not rows) are split so that each thread owns its rows of W_hh, which stay in
// its core's cache for the whole sequence, and applies the activation to the columns it
// just computed.  One team runs the whole sequence and meets at an OpenMP barrier
// between steps (libgomp's barrier stops spinning when threads outnumber free cores; a
// spin barrier collapsed then).  Measurements: docs/performance.md.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/ParallelGuard.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>

#include "cpu_blas.h"

namespace fastrnn {

// Steps of fewer multiply-adds than this run on one thread (the split costs more there).
constexpr int64_t kSplitMacs = int64_t{1} << 15;

// Calls step(i, c0, c1) for i = 0 .. steps-1 over column slices [c0, c1) of [0, H);
// step i+1 starts only once every slice of step i is done.  BLAS calls inside run
// single-threaded (BlasSingleThreadGuard).  An exception thrown by a step is rethrown
// here once every thread has left the team.
template <typename Fn>
void for_each_step(int64_t steps, int64_t batch, int64_t H, const Fn& step) {
#ifdef _OPENMP
  const int64_t threads = at::get_num_threads();
  if (threads > 1 && batch * H * H >= kSplitMacs && !at::in_parallel_region()) {
    // Slices rounded up to 16 columns keep vector loops and cache lines whole.
    const int64_t slice = ((H + threads - 1) / threads + 15) / 16 * 16;
    const int64_t slices = (H + slice - 1) / slice;
    std::exception_ptr error;
    std::atomic<bool> failed{false};
    // No num_threads clause, as in ATen (GOMP's thread pool, pytorch#32008): the team is
    // what OpenMP gives (1 inside another active region); slices spread over it.
#pragma omp parallel
    {
      const int64_t team = omp_get_num_threads(), tid = omp_get_thread_num();
      const int64_t per = (slices + team - 1) / team;
      const int64_t first = std::min(slices, tid * per), last = std::min(slices, first + per);
      c10::ParallelGuard in_parallel(true);  // ATen calls in here run inline
      BlasSingleThreadGuard single_threaded_blas;
      for (int64_t i = 0; i < steps; ++i) {
        // Every thread reaches every barrier, also after a failure elsewhere.
        if (!failed.load(std::memory_order_relaxed)) {
          try {
            for (int64_t k = first; k < last; ++k) {
              step(i, k * slice, std::min(H, (k + 1) * slice));
            }
          } catch (...) {
#pragma omp critical(fastrnn_step_error)
            if (!failed.exchange(true)) error = std::current_exception();
          }
        }
#pragma omp barrier
      }
    }
    if (error) std::rethrow_exception(error);
    return;
  }
#endif
  // Small steps (or one thread): MKL's own threads would cost more than they give.
  BlasSingleThreadGuard single_threaded_blas;
  for (int64_t i = 0; i < steps; ++i) step(i, 0, H);
}

}  // namespace fastrnn
