// Row-major GEMM used by the CPU kernels, called from inside the per-step loop.
//
// Why not at::mm_out: every at:: call goes through the dispatcher (a few µs), and the
// per-step loop makes T of them per layer and direction; at B=1..32, H<=128 that
// overhead is larger than the step's arithmetic.  The BLAS that torch's CPU wheels
// link (MKL on x86-64) exports the Fortran symbols sgemm_/dgemm_; we look them up at
// run time with dlsym, so the extension still loads where they are not exported, and
// fall back to a portable path (at::addmm_ on views) that tests force and cover.
#pragma once

#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "library_api.h"

namespace fastrnn {

// Whether gemm<scalar_t> runs on ATen's GEMMs (oneDNN's), which round each product's
// result to scalar_t: bfloat16 and float16.  float and double call the BLAS.
template <typename scalar_t>
constexpr bool kAtenGemm = !std::is_same_v<scalar_t, float> && !std::is_same_v<scalar_t, double>;

// C[m, n] = alpha * op(A)[m, k] @ op(B)[k, n] + beta * C, all row-major with leading
// dimensions lda/ldb/ldc (elements between rows).  When beta == 0, C is not read.
// float, double, c10::BFloat16 and c10::Half.
template <typename scalar_t>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
          scalar_t alpha, const scalar_t* a, int64_t lda, const scalar_t* b,
          int64_t ldb, scalar_t beta, scalar_t* c, int64_t ldc);

// A new uninitialised CPU tensor, allocated without a trip through the dispatcher (at
// tutorial sizes every at::empty is a visible part of an op call).
inline at::Tensor empty_cpu(at::IntArrayRef sizes, at::ScalarType dtype) {
  return at::Tensor(at::detail::empty_cpu(sizes, dtype));
}

// A dense row-major copy of t, made without a trip through the dispatcher.  Gradients
// that reach backward are often expanded views (the grad of .sum() is a stride-0
// tensor); contiguous() on them goes through clone/empty_like/copy_, a visible part of
// a training step at tutorial sizes.
at::Tensor dense_copy(const at::Tensor& t);

// t itself when it is already dense, else dense_copy(t).
inline at::Tensor dense(const at::Tensor& t) { return t.is_contiguous() ? t : dense_copy(t); }

// While alive, the BLAS runs single-threaded in the calling thread (MKL's thread-local
// setting; nothing where that is not exported).  Held by each thread of the kernels' own
// OpenMP team, and around the per-step loop when it runs on one thread: after
// torch.set_num_threads(), which turns MKL's dynamic threading off, MKL otherwise threads
// these small calls itself, slower than one thread (docs/performance.md).
class BlasSingleThreadGuard {
 public:
  BlasSingleThreadGuard();
  ~BlasSingleThreadGuard();
  BlasSingleThreadGuard(const BlasSingleThreadGuard&) = delete;
  BlasSingleThreadGuard& operator=(const BlasSingleThreadGuard&) = delete;

 private:
  int previous_ = 0;
};

// "blas" when the exported Fortran BLAS is found and enabled, else "portable".
FASTRNN_API std::string gemm_backend();
// Forces the portable path (for tests) or re-enables BLAS when available.
FASTRNN_API void set_gemm_backend(const std::string& name);

}  // namespace fastrnn
