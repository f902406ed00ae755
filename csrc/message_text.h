// Numbers, shapes and devices as text for argument checks' messages.
#pragma once

#include <c10/core/Device.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <string>

namespace fastrnn {

// A message takes its numbers as text (std::to_string, libc's formatting), not through
// c10::str's ostream: on one GPU machine's build of this library every refused call
// whose message formatted a number crashed, and a build here with its own C++ runtime
// (-static-libstdc++) lost the numbers, while text came through whole
// (docs/performance.md).
inline std::string text(int64_t number) { return std::to_string(number); }

inline std::string text(c10::IntArrayRef sizes) {  // "[2, 3, 4]", as c10 prints sizes
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) {
    out += (i ? ", " : "") + std::to_string(sizes[i]);
  }
  return out + "]";
}

inline std::string text(const c10::Device& device) { return device.str(); }  // "cuda:0"

}  // namespace fastrnn
