// Fused pointwise work of one time step, written as plain loops the compiler vectorises
// (activation.cpp builds them once per CPU level).  A scalar std::tanh loop dominated
// the step, so both dtypes use branch-free tanh approximations that vectorise: fp32
// Eigen's rational generic_fast_tanh_float (a few ulp), fp64 the expm1 form below
// (<= 3 ulp).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace fastrnn {

// always_inline: the CPU-specific clones in activation.cpp must inline it to vectorise it.
__attribute__((always_inline)) inline float fast_tanh(float x) {
  constexpr float clamp = 7.90531110763549805f;  // tanh(clamp) rounds to +-1 in fp32
  // Plain ternaries, not std::min/max/abs: those are not inlined into target clones.
  const float xc = x < -clamp ? -clamp : (x > clamp ? clamp : x);
  const float x2 = xc * xc;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * xc;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  const float r = p / q;  // computed unconditionally so the select vectorises
  // Below 4e-4 tanh(x) == x in fp32; returning x also keeps -0.0 and tiny values exact.
  return (x < 0.0004f && x > -0.0004f) ? x : r;
}

// fp64 tanh that vectorises (glibc's std::tanh does not): tanh|x| = expm1(2|x|) / (expm1(2|x|) + 2), with expm1 by
// Cody-Waite reduction y = k ln2 + r, |r| <= ln2/2, a degree-13 Taylor polynomial for
// expm1(r), and 2^k built from its exponent bits (no int conversion, which AVX2 lacks).
// At most 3 ulp from std::tanh over [-25, 25]; NaN stays NaN (docs/performance.md).
__attribute__((always_inline)) inline double fast_tanh(double x) {
  const double ax0 = x < 0 ? -x : x;
  const double ax = ax0 > 19.5 ? 19.5 : ax0;  // tanh(19.5) rounds to 1 in fp64
  const double y = 2.0 * ax;
  const double magic = 6755399441055744.0;  // 1.5 * 2^52: rounds to an integer k in the low bits
  const double shifted = y * 1.4426950408889634 + magic;
  const double kd = shifted - magic;
  const double r = (y - kd * 6.93147180369123816490e-01) - kd * 1.90821492927058770002e-10;
  double p = 1.0 / 6227020800.0;  // 1/13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  const double expm1_r = r + r * r * p;
  int64_t shifted_bits;
  __builtin_memcpy(&shifted_bits, &shifted, sizeof(shifted_bits));
  // 2^k from its bits; 0x4338000000000000 is the bit pattern of `magic`.
  const int64_t bits = (shifted_bits - 0x4338000000000000LL + 1023) << 52;
  double two_k;
  __builtin_memcpy(&two_k, &bits, sizeof(two_k));
  const double expm1_y = two_k * expm1_r + (two_k - 1.0);
  return __builtin_copysign(expm1_y / (expm1_y + 2.0), x);
}

// h[i, j] = act(h[i, j] + bias[j]) over rows x cols, rows ld elements apart; bias may
// be null.  Defined in activation.cpp, once per dtype, with the CPU-specific clones;
// bfloat16 and float16 computed in float32 and rounded once.
void bias_activation_rows(float* h, int64_t rows, int64_t cols, int64_t ld,
                          const float* bias, bool relu);
void bias_activation_rows(double* h, int64_t rows, int64_t cols, int64_t ld,
                          const double* bias, bool relu);
void bias_activation_rows(c10::BFloat16* h, int64_t rows, int64_t cols, int64_t ld,
                          const c10::BFloat16* bias, bool relu);
void bias_activation_rows(c10::Half* h, int64_t rows, int64_t cols, int64_t ld,
                          const c10::Half* bias, bool relu);

// dz[i, j] = (dy[i, j] + dh[i, j]) * act'(z), act' taken from the saved output y:
// tanh' = 1 - y^2, relu' = (y > 0).  dy and y: rows ld_y apart; dh and dz: rows ld_h apart;
// dh may be null (no recurrent gradient).  bfloat16 and float16 as above.
void activation_backward_rows(float* dz, const float* dy, const float* dh, const float* y,
                              int64_t rows, int64_t cols, int64_t ld_y, int64_t ld_h, bool relu);
void activation_backward_rows(double* dz, const double* dy, const double* dh,
                              const double* y, int64_t rows, int64_t cols, int64_t ld_y,
                              int64_t ld_h, bool relu);
void activation_backward_rows(c10::BFloat16* dz, const c10::BFloat16* dy,
                              const c10::BFloat16* dh, const c10::BFloat16* y, int64_t rows,
                              int64_t cols, int64_t ld_y, int64_t ld_h, bool relu);
void activation_backward_rows(c10::Half* dz, const c10::Half* dy, const c10::Half* dh,
                              const c10::Half* y, int64_t rows, int64_t cols, int64_t ld_y,
                              int64_t ld_h, bool relu);

// out[j] = sum_i m[i, j] over a dense [rows, cols] matrix (bias gradients).  Accumulated
// in double: N = T*B rows of fp32 summed in fp32 drift past 1e-5.
template <typename scalar_t>
void column_sums(const scalar_t* m, int64_t rows, int64_t cols, scalar_t* out) {
  std::vector<double> acc(cols, 0.0);
  for (int64_t i = 0; i < rows; ++i) {
    const scalar_t* row = m + i * cols;
    for (int64_t j = 0; j < cols; ++j) acc[j] += static_cast<double>(row[j]);
  }
  for (int64_t j = 0; j < cols; ++j) out[j] = static_cast<scalar_t>(acc[j]);
}

}  // namespace fastrnn
