// The fastrnn ops' kernels on the Triton path's device (CUDA; the CPU in tests, under the
// Triton interpreter): a padded call of rnn_forward or rnn_backward replayed from C++
// where launch.py allows it and a plan is kept (launch_replay.h), with no Python between
// the dispatcher and the kernels, and recorded where none is yet; every other call handed
// to the Python launch functions (fastrnn/triton/registration.py).  The key of a call's
// plan (its tensors and flags) is built here alone.
#pragma once

#include <Python.h>

namespace fastrnn::python {

// register_triton_kernels(dispatch_key, forward, backward, replay_tf32, recorded) -> a
// handle that keeps the kernels registered for that dispatch key ("CUDA", "CPU") until it
// is released.  forward / backward: the Python kernels of rnn_forward / rnn_backward,
// called with the op's arguments where a call is not replayed; replay_tf32(): None where
// no call is replayed now, else the TF32 flag a plan's key holds (launch.replay_tf32);
// recorded(kernel, args): (results, judged, steps) of kernel(*args) recorded
// (launch.recorded), steps as store_plan takes them.
PyObject* register_triton_kernels(PyObject*, PyObject* args);

}  // namespace fastrnn::python
