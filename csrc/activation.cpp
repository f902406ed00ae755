#include "activation.h"

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
// scalar code.
template <typename scalar_t>
__attribute__((always_inline)) inline void bias_activation_impl(scalar_t* h, int64_t rows, int64_t cols, int64_t ld,
                                 const scalar_t* bias, bool relu) {
  const scalar_t zero(0);
  for (int64_t i = 0; i < rows; ++i) {
    scalar_t* row = h + i * ld;
    if (bias != nullptr) {
      for (int64_t j = 0; j < cols; ++j) row[j] += bias[j];
    }
    if (relu) {
      for (int64_t j = 0; j < cols; ++j) row[j] = row[j] > zero ? row[j] : zero;
    } else {
      for (int64_t j = 0; j < cols; ++j) row[j] = fast_tanh(row[j]);
    }
  }
}

template <typename scalar_t>
__attribute__((always_inline)) inline void activation_backward_impl(scalar_t* dz, const scalar_t* dy, const scalar_t* dh,
                                     const scalar_t* y, int64_t rows, int64_t cols,
                                     int64_t ld_y, int64_t ld_h, bool relu) {
  const scalar_t zero(0), one(1);
  for (int64_t i = 0; i < rows; ++i) {
    const scalar_t* y_row = y + i * ld_y;
    const scalar_t* dy_row = dy + i * ld_y;
    scalar_t* dz_row = dz + i * ld_h;
    if (dh == nullptr) {  // no recurrent gradient (a single cell step)
      if (relu) {
        for (int64_t j = 0; j < cols; ++j) {
          const scalar_t g = dy_row[j];  // unconditional: lets the loop vectorise
          dz_row[j] = y_row[j] > zero ? g : zero;
        }
      } else {
        for (int64_t j = 0; j < cols; ++j) dz_row[j] = dy_row[j] * (one - y_row[j] * y_row[j]);
      }
      continue;
    }
    const scalar_t* dh_row = dh + i * ld_h;
    if (relu) {
      for (int64_t j = 0; j < cols; ++j) {
        const scalar_t g = dy_row[j] + dh_row[j];  // unconditional: lets the loop vectorise
        dz_row[j] = y_row[j] > zero ? g : zero;
      }
    } else {
      for (int64_t j = 0; j < cols; ++j) {
        dz_row[j] = (dy_row[j] + dh_row[j]) * (one - y_row[j] * y_row[j]);
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

}  // namespace fastrnn
