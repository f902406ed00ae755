#include "cpu_blas.h"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>

namespace fastrnn {
namespace {

using sgemm_fn = void (*)(const char*, const char*, const int*, const int*, const int*,
                          const float*, const float*, const int*, const float*,
                          const int*, const float*, float*, const int*);
using dgemm_fn = void (*)(const char*, const char*, const int*, const int*, const int*,
                          const double*, const double*, const int*, const double*,
                          const int*, const double*, double*, const int*);

using set_threads_local_fn = int (*)(int);

struct FortranBlas {
  sgemm_fn sgemm = nullptr;
  dgemm_fn dgemm = nullptr;
  set_threads_local_fn set_threads_local = nullptr;  // MKL's C mkl_set_num_threads_local
};

// Looks the symbols up in the library that defines at::empty (libtorch_cpu), where
// torch's wheels put their BLAS, then in the global namespace.
FortranBlas find_fortran_blas() {
  FortranBlas blas;
  void* handle = nullptr;
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&at::_ops::empty_memory_format::call), &info) &&
      info.dli_fname != nullptr) {
    handle = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
  }
  for (void* h : {handle, RTLD_DEFAULT}) {
    if (h == nullptr && h != RTLD_DEFAULT) continue;
    if (blas.sgemm == nullptr) blas.sgemm = reinterpret_cast<sgemm_fn>(dlsym(h, "sgemm_"));
    if (blas.dgemm == nullptr) blas.dgemm = reinterpret_cast<dgemm_fn>(dlsym(h, "dgemm_"));
    if (blas.set_threads_local == nullptr) {
      // The C entry point (by value); "mkl_set_num_threads_local" is the Fortran one.
      blas.set_threads_local =
          reinterpret_cast<set_threads_local_fn>(dlsym(h, "MKL_Set_Num_Threads_Local"));
    }
  }
  return blas;
}

const FortranBlas& fortran_blas() {
  static const FortranBlas blas = find_fortran_blas();
  return blas;
}

std::atomic<bool> use_blas{true};

bool fits_int(int64_t v) { return v <= INT_MAX; }

template <typename scalar_t>
void gemm_portable(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                   scalar_t alpha, const scalar_t* a, int64_t lda, const scalar_t* b,
                   int64_t ldb, scalar_t beta, scalar_t* c, int64_t ldc) {
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value);
  auto view = [&](const scalar_t* p, int64_t rows, int64_t cols, int64_t ld, bool trans) {
    // Stored row-major as [rows, cols] unless transposed, in which case [cols, rows].
    auto* data = const_cast<scalar_t*>(p);
    if (trans) return at::from_blob(data, {cols, rows}, {ld, 1}, options).t();
    return at::from_blob(data, {rows, cols}, {ld, 1}, options);
  };
  auto c_view = at::from_blob(c, {m, n}, {ldc, 1}, options);
  // addmm_ ignores C (even NaN) when beta == 0, matching BLAS.
  c_view.addmm_(view(a, m, k, lda, trans_a), view(b, k, n, ldb, trans_b), beta, alpha);
}

template <typename scalar_t>
void gemm_fortran(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, scalar_t alpha,
                  const scalar_t* a, int64_t lda, const scalar_t* b, int64_t ldb, scalar_t beta,
                  scalar_t* c, int64_t ldc) {
  if (k == 0) {
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        c[i * ldc + j] = beta == scalar_t(0) ? scalar_t(0) : beta * c[i * ldc + j];
      }
    }
    return;
  }
  const auto& blas = fortran_blas();
  const bool have = std::is_same_v<scalar_t, float> ? blas.sgemm != nullptr
                                                    : blas.dgemm != nullptr;
  if (!use_blas.load() || !have || !fits_int(m) || !fits_int(n) || !fits_int(k) ||
      !fits_int(lda) || !fits_int(ldb) || !fits_int(ldc)) {
    gemm_portable(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands
  // and keep the transpose flags.  Leading dimensions must be >= 1 for BLAS.
  const char ta = trans_a ? 'T' : 'N';
  const char tb = trans_b ? 'T' : 'N';
  const int mi = static_cast<int>(n), ni = static_cast<int>(m), ki = static_cast<int>(k);
  const int lda_i = static_cast<int>(std::max<int64_t>(ldb, 1));
  const int ldb_i = static_cast<int>(std::max<int64_t>(lda, 1));
  const int ldc_i = static_cast<int>(std::max<int64_t>(ldc, 1));
  if constexpr (std::is_same_v<scalar_t, float>) {
    blas.sgemm(&tb, &ta, &mi, &ni, &ki, &alpha, b, &lda_i, a, &ldb_i, &beta, c, &ldc_i);
  } else {
    blas.dgemm(&tb, &ta, &mi, &ni, &ki, &alpha, b, &lda_i, a, &ldb_i, &beta, c, &ldc_i);
  }
}

}  // namespace

std::string gemm_backend() {
  const auto& blas = fortran_blas();
  return (use_blas.load() && blas.sgemm != nullptr && blas.dgemm != nullptr) ? "blas"
                                                                            : "portable";
}

void set_gemm_backend(const std::string& name) {
  TORCH_CHECK(name == "blas" || name == "portable",
              "fastrnn: gemm backend must be 'blas' or 'portable', got '", name, "'");
  use_blas.store(name == "blas");
}

template <typename scalar_t>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, scalar_t alpha,
          const scalar_t* a, int64_t lda, const scalar_t* b, int64_t ldb, scalar_t beta,
          scalar_t* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if constexpr (kAtenGemm<scalar_t>) {
    // bfloat16/float16: ATen's GEMMs (oneDNN's), which the kernels run only for steps
    // large enough that the dispatcher's cost does not show (cpu_dtypes.h).
    gemm_portable(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  } else {
    gemm_fortran(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
}

BlasSingleThreadGuard::BlasSingleThreadGuard() {
  if (const auto set = fortran_blas().set_threads_local) previous_ = set(1);
}

BlasSingleThreadGuard::~BlasSingleThreadGuard() {
  if (const auto set = fortran_blas().set_threads_local) set(previous_);
}

at::Tensor dense_copy(const at::Tensor& src) {
  at::Tensor out = empty_cpu(src.sizes(), src.scalar_type());
  if (src.dim() > 3 || !(src.scalar_type() == at::kFloat || src.scalar_type() == at::kDouble)) {
    out.copy_(src);
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "fastrnn_dense_copy", [&] {
    // Viewed as [n0, n1, n2], leading sizes padded with 1.
    int64_t n[3] = {1, 1, 1}, st[3] = {0, 0, 0};
    const int64_t pad = 3 - src.dim();
    for (int64_t i = 0; i < src.dim(); ++i) {
      n[pad + i] = src.size(i);
      st[pad + i] = src.stride(i);
    }
    const scalar_t* from = src.const_data_ptr<scalar_t>();
    scalar_t* to = out.data_ptr<scalar_t>();
    for (int64_t i0 = 0; i0 < n[0]; ++i0) {
      for (int64_t i1 = 0; i1 < n[1]; ++i1, to += n[2]) {
        const scalar_t* row = from + i0 * st[0] + i1 * st[1];
        if (st[2] == 1) {
          std::memcpy(to, row, sizeof(scalar_t) * n[2]);
        } else if (st[2] == 0) {  // expanded, as the grad of .sum() is
          std::fill(to, to + n[2], row[0]);
        } else {
          for (int64_t i2 = 0; i2 < n[2]; ++i2) to[i2] = row[i2 * st[2]];
        }
      }
    }
  });
  return out;
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*,
                          int64_t, const float*, int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*,
                           int64_t, const double*, int64_t, double, double*, int64_t);
template void gemm<c10::BFloat16>(bool, bool, int64_t, int64_t, int64_t, c10::BFloat16,
                                  const c10::BFloat16*, int64_t, const c10::BFloat16*, int64_t,
                                  c10::BFloat16, c10::BFloat16*, int64_t);
template void gemm<c10::Half>(bool, bool, int64_t, int64_t, int64_t, c10::Half,
                              const c10::Half*, int64_t, const c10::Half*, int64_t, c10::Half,
                              c10::Half*, int64_t);

}  // namespace fastrnn
