#include "cpu_dtypes.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include <atomic>

namespace fastrnn {
namespace {

enum class Mode { kAuto, kNative, kFloat32 };
std::atomic<Mode> mode{Mode::kAuto};

// ATen's own test for native bfloat16/float16 GEMMs (the one torch.ops.mkldnn offers);
// false in a torch built without oneDNN, which has not registered it.
bool native_gemms(at::ScalarType dtype) {
  auto ask = [](const char* name) {
    const auto op = c10::Dispatcher::singleton().findSchema({name, ""});
    return op.has_value() && op->typed<bool()>().call();
  };
  static const bool bfloat16 = ask("mkldnn::_is_mkldnn_bf16_supported");
  static const bool float16 = ask("mkldnn::_is_mkldnn_fp16_supported");
  return dtype == at::kBFloat16 ? bfloat16 : float16;
}

}  // namespace

bool computed_in_float(at::ScalarType dtype, Pass pass, int64_t steps, int64_t batch,
                       int64_t input_size, int64_t hidden) {
  if (!reduced_precision(dtype)) return false;
  switch (mode.load()) {
    case Mode::kNative:
      return false;
    case Mode::kFloat32:
      return true;
    case Mode::kAuto:
      break;
  }
  const int64_t weights = hidden * (input_size + hidden);
  const int64_t per_step =
      pass == Pass::kForward ? kNativeWeightsPerStep : kNativeWeightsPerBackwardStep;
  const bool large_weights = weights >= kNativeWeightsPerStep && weights >= steps * per_step;
  if (native_gemms(dtype)) return !(batch * weights >= kNativeStepMacs || large_weights);
  return !(steps == 1 && batch == 1 && weights >= kNativeWeightsPerStep);
}

std::string reduced_precision_mode() {
  switch (mode.load()) {
    case Mode::kNative:
      return "native";
    case Mode::kFloat32:
      return "float32";
    case Mode::kAuto:
      break;
  }
  return "auto";
}

void set_reduced_precision_mode(const std::string& name) {
  TORCH_CHECK(name == "auto" || name == "native" || name == "float32",
              "fastrnn: reduced precision mode must be 'auto', 'native' or 'float32', got '",
              name, "'");
  mode.store(name == "native" ? Mode::kNative : name == "float32" ? Mode::kFloat32 : Mode::kAuto);
}

}  // namespace fastrnn
