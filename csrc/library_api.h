// The op library (fastrnn/libfastrnn_ops.so: kernels, op schemas, autograd; no Python) is
// built with hidden symbols.  FASTRNN_API marks the few functions it exports to the
// Python module fastrnn._C (csrc/python/module.cpp), which links against it.
#pragma once

#define FASTRNN_API __attribute__((visibility("default")))
