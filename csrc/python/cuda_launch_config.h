// The CUDA driver's launch configuration, as cuLaunchKernelEx takes it (cuda.h's
// CUlaunchConfig and CUlaunchAttribute, CUDA 12 on), declared here because fastrnn._C
// builds without CUDA.  tests/test_launch_replay.py checks each field's offset against a
// cuda.h (Triton's copy).
#pragma once

namespace fastrnn::python {

constexpr int kLaunchAttributeCooperative = 2;  // CU_LAUNCH_ATTRIBUTE_COOPERATIVE

struct LaunchAttribute {  // CUlaunchAttribute
  int id;                 // CUlaunchAttributeID
  char pad[4];
  union alignas(8) {  // CUlaunchAttributeValue: 64 bytes, one of them used
    char bytes[64];
    int cooperative;
  } value;
};

struct LaunchConfig {  // CUlaunchConfig
  unsigned grid_x, grid_y, grid_z;
  unsigned block_x, block_y, block_z;
  unsigned shared;
  void* stream;
  LaunchAttribute* attributes;
  unsigned attribute_count;
};

}  // namespace fastrnn::python
