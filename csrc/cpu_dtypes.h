// The dtypes the CPU kernels take.  float32 and float64 run as they are.  bfloat16 and
// float16 run one of two ways: on float32 copies of the arguments (float32 accumulation,
// as cuDNN's half-precision RNNs do; the results rounded once, at the end), or in their
// own dtype: ATen's GEMMs (float32 accumulation, rounded per product) and the kernels'
// pointwise passes computing in float32.  On a CPU whose GEMMs of that dtype are native
// (oneDNN's), steps of kNativeStepMacs or more and calls whose weights are too large to
// copy (kNativeWeightsPerStep) run in their own dtype; the native GEMMs are 2-5x faster
// than float32 ones at large sizes and slower at small ones.  Elsewhere only one step of
// one batch row with weights too large to copy does (a cell call at batch 1, or a
// one-step sequence): there converting the weights, and in a backward their gradients
// back, costs more than ATen's own kernels of the dtype lose (docs/performance.md).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "library_api.h"

namespace fastrnn {

// One step's multiply-adds, B*H*(I+H), from which native GEMMs beat the float32 kernels
// (crossover measured on one CPU: docs/performance.md).
constexpr int64_t kNativeStepMacs = int64_t{1} << 20;

// A layer's weights per step of a call, H*(I+H)/T, from which converting them to float32
// on every call costs more than the float32 kernels save (a cell call is one step;
// measured on one CPU: docs/performance.md).  A backward converts them, and their
// gradients back, at more cost: for weights of kNativeWeightsPerStep or more, it runs in
// its own dtype from kNativeWeightsPerBackwardStep a step.
constexpr int64_t kNativeWeightsPerStep = int64_t{3} << 16;
constexpr int64_t kNativeWeightsPerBackwardStep = int64_t{1} << 15;

enum class Pass { kForward, kBackward };

// AT_DISPATCH over the kernels' dtypes: scalar_t is float, double, c10::BFloat16 or
// c10::Half (the last two only where they run in their own dtype).
#define FASTRNN_DISPATCH_CPU_DTYPES(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, TYPE, NAME, __VA_ARGS__)

inline bool reduced_precision(at::ScalarType dtype) {
  return dtype == at::kBFloat16 || dtype == at::kHalf;
}

inline void check_cpu_dtype(at::ScalarType dtype) {
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || reduced_precision(dtype),
              "fastrnn: the C++ CPU kernels support float32, float64, bfloat16 and float16, "
              "got ", dtype);
}

// Whether a forward or backward call of this dtype, of `steps` steps that each take batch
// rows of input_size features into hidden units, runs on float32 copies (only
// bfloat16/float16 can, by the rules above).
bool computed_in_float(at::ScalarType dtype, Pass pass, int64_t steps, int64_t batch,
                       int64_t input_size, int64_t hidden);

// How bfloat16/float16 run: "auto" (the rules above; the default), "native" or "float32"
// (every call one way, for tests).
FASTRNN_API std::string reduced_precision_mode();
FASTRNN_API void set_reduced_precision_mode(const std::string& mode);

inline at::Tensor to_float(const at::Tensor& t) { return t.to(at::kFloat); }

inline std::optional<at::Tensor> to_float(const std::optional<at::Tensor>& t) {
  if (!t.has_value() || !t->defined()) return t;
  return to_float(*t);
}

// Each tensor converted to dtype (the arguments to float32, the results back).
inline std::vector<at::Tensor> converted(at::TensorList ts, at::ScalarType dtype) {
  std::vector<at::Tensor> result;
  result.reserve(ts.size());
  for (const auto& t : ts) result.push_back(t.to(dtype));
  return result;
}

}  // namespace fastrnn
