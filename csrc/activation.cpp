#include "activation.h"

#include <type_traits>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// One AVX2+FMA (x86-64-v3) clone and one baseline clone, chosen at load time by the
// CPU's features, so the extension runs on every x86-64 CPU torch's wheels run on and
// uses 8-wide vectors where it can.  Not "arch=haswell": GCC dispatches that by CPU
// model, so AMD CPUs got the baseline clone (docs/performance.md).
#define FASTRNN_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FASTRNN_MULTIVERSION
#endif

namespace fastrnn {
namespace {


// The relu/tanh and bias/no-bias branches sit outside the inner loops so each inner
// loop is a straight vectorisable body.  always_inline everywhere: GCC does not inline
// a baseline-target function into a target clone otherwise, and the clone then calls
// scalar code.  acc_t: what the arithmetic runs in (float for bfloat16/float16).
template <typename scalar_t>
using compute_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

template <typename scalar_t, typename acc_t = compute_t<scalar_t>>
__attribute__((always_inline)) inline void bias_activation_impl(scalar_t* h, int64_t rows, int64_t cols, int64_t ld,
                                 const scalar_t* bias, bool relu) {
  const acc_t zero(0);
  for (int64_t i = 0; i < rows; ++i) {
    scalar_t* row = h + i * ld;
    if (bias != nullptr) {
      if (relu) {
        for (int64_t j = 0; j < cols; ++j) {
          const acc_t z = acc_t(row[j]) + acc_t(bias[j]);
          row[j] = scalar_t(z > zero ? z : zero);
        }
      } else {
        for (int64_t j = 0; j < cols; ++j) {
          row[j] = scalar_t(fast_tanh(acc_t(row[j]) + acc_t(bias[j])));
        }
      }
    } else if (relu) {
      for (int64_t j = 0; j < cols; ++j) {
        const acc_t z(row[j]);
        row[j] = scalar_t(z > zero ? z : zero);
      }
    } else {
      for (int64_t j = 0; j < cols; ++j) row[j] = scalar_t(fast_tanh(acc_t(row[j])));
    }
  }
}

template <typename scalar_t, typename acc_t = compute_t<scalar_t>>
__attribute__((always_inline)) inline void activation_backward_impl(scalar_t* dz, const scalar_t* dy, const scalar_t* dh,
                                     const scalar_t* y, int64_t rows, int64_t cols,
                                     int64_t ld_y, int64_t ld_h, bool relu) {
  const acc_t zero(0), one(1);
  for (int64_t i = 0; i < rows; ++i) {
    const scalar_t* y_row = y + i * ld_y;
    const scalar_t* dy_row = dy + i * ld_y;
    scalar_t* dz_row = dz + i * ld_h;
    if (dh == nullptr) {  // no recurrent gradient (a single cell step)
      if (relu) {
        for (int64_t j = 0; j < cols; ++j) {
          const acc_t g(dy_row[j]);  // unconditional: lets the loop vectorise
          dz_row[j] = scalar_t(acc_t(y_row[j]) > zero ? g : zero);
        }
      } else {
        for (int64_t j = 0; j < cols; ++j) {
          const acc_t yj(y_row[j]);
          dz_row[j] = scalar_t(acc_t(dy_row[j]) * (one - yj * yj));
        }
      }
      continue;
    }
    const scalar_t* dh_row = dh + i * ld_h;
    if (relu) {
      for (int64_t j = 0; j < cols; ++j) {
        // Unconditional: lets the loop vectorise.
        const acc_t g = acc_t(dy_row[j]) + acc_t(dh_row[j]);
        dz_row[j] = scalar_t(acc_t(y_row[j]) > zero ? g : zero);
      }
    } else {
      for (int64_t j = 0; j < cols; ++j) {
        const acc_t yj(y_row[j]);
        dz_row[j] = scalar_t((acc_t(dy_row[j]) + acc_t(dh_row[j])) * (one - yj * yj));
      }
    }
  }
}

}  // namespace

FASTRNN_MULTIVERSION void bias_activation_rows(float* h, int64_t rows, int64_t cols,
                                               int64_t ld, const float* bias, bool relu) {
  bias_activation_impl(h, rows, cols, ld, bias, relu);
}
FASTRNN_MULTIVERSION void bias_activation_rows(double* h, int64_t rows, int64_t cols,
                                               int64_t ld, const double* bias, bool relu) {
  bias_activation_impl(h, rows, cols, ld, bias, relu);
}
FASTRNN_MULTIVERSION void bias_activation_rows(c10::BFloat16* h, int64_t rows, int64_t cols,
                                               int64_t ld, const c10::BFloat16* bias,
                                               bool relu) {
  bias_activation_impl(h, rows, cols, ld, bias, relu);
}
FASTRNN_MULTIVERSION void bias_activation_rows(c10::Half* h, int64_t rows, int64_t cols,
                                               int64_t ld, const c10::Half* bias, bool relu) {
  bias_activation_impl(h, rows, cols, ld, bias, relu);
}
FASTRNN_MULTIVERSION void activation_backward_rows(float* dz, const float* dy,
                                                   const float* dh, const float* y,
                                                   int64_t rows, int64_t cols, int64_t ld_y,
                                                   int64_t ld_h, bool relu) {
  activation_backward_impl(dz, dy, dh, y, rows, cols, ld_y, ld_h, relu);
}
FASTRNN_MULTIVERSION void activation_backward_rows(double* dz, const double* dy,
                                                   const double* dh, const double* y,
                                                   int64_t rows, int64_t cols, int64_t ld_y,
                                                   int64_t ld_h, bool relu) {
  activation_backward_impl(dz, dy, dh, y, rows, cols, ld_y, ld_h, relu);
}
FASTRNN_MULTIVERSION void activation_backward_rows(c10::BFloat16* dz, const c10::BFloat16* dy,
                                                   const c10::BFloat16* dh,
                                                   const c10::BFloat16* y, int64_t rows,
                                                   int64_t cols, int64_t ld_y, int64_t ld_h,
                                                   bool relu) {
  activation_backward_impl(dz, dy, dh, y, rows, cols, ld_y, ld_h, relu);
}
FASTRNN_MULTIVERSION void activation_backward_rows(c10::Half* dz, const c10::Half* dy,
                                                   const c10::Half* dh, const c10::Half* y,
                                                   int64_t rows, int64_t cols, int64_t ld_y,
                                                   int64_t ld_h, bool relu) {
  activation_backward_impl(dz, dy, dh, y, rows, cols, ld_y, ld_h, relu);
}

}  // namespace fastrnn
