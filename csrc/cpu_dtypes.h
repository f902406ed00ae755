// The dtypes the CPU kernels take.  float32 and float64 run as they are; bfloat16 and
// float16 run in float32 on float32 copies of the arguments (float32 accumulation, as
// cuDNN's half-precision RNNs do), the results rounded once, at the end.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <vector>

namespace fastrnn {

inline bool computed_in_float(at::ScalarType dtype) {
  return dtype == at::kBFloat16 || dtype == at::kHalf;
}

inline void check_cpu_dtype(at::ScalarType dtype) {
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || computed_in_float(dtype),
              "fastrnn: the C++ CPU kernels support float32, float64, bfloat16 and float16, "
              "got ", dtype);
}

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
