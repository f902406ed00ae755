// Replayed launches: the kernel launches of a padded forward, recorded once per call
// signature by the Triton launch function (fastrnn/triton/launch.py, REPLAY_LAUNCHES)
// and from then on issued from here, straight to the CUDA driver, with no Python between
// the call's checks and its kernels (docs/performance.md, "Replayed launches").
#pragma once

#include <Python.h>

namespace fastrnn::python {

// store_forward_plan(input, hx, weights, num_layers, bidirectional, relu, tf32,
// (output, h_n, layer_outputs), launches) -> bool: keeps the launches of that call for
// the calls with its key (plan_key); False where they cannot be kept (launches None, a
// pointer in none of the call's tensors, tensors that overlap): such calls are then
// never replayed.
PyObject* store_forward_plan(PyObject*, PyObject* args);

// replay_forward(input, hx, weights, num_layers, bidirectional, relu, tf32) ->
// (output, h_n, layer_outputs) after rnn_forward's checks and the kept launches; True
// where no plan is stored for such calls yet; None where they are never replayed (their
// plan could not be kept; tensors not 16-byte aligned; not CUDA tensors).
PyObject* replay_forward(PyObject*, PyObject* args);

// clear_launch_plans() -> int: drops every kept plan; how many there were.
PyObject* clear_launch_plans(PyObject*, PyObject*);

// replay_launches_to(target): a list, to which each replayed launch is appended as
// (function, grid_x, grid_y, threads, shared memory, parameter values) in place of its
// launch, and which CPU tensors replay to (tests, tools/host_cost_cpu.py); None: the
// CUDA driver (the default).
PyObject* replay_launches_to(PyObject*, PyObject* target);

}  // namespace fastrnn::python
