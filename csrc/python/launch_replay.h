// Replayed launches: the kernel launches of a padded forward or backward call, recorded
// once per call signature by the Triton launch functions (fastrnn/triton/launch.py,
// REPLAY_LAUNCHES) with the call's allocations and results, and from then on issued from
// here, straight to the CUDA driver, with no Python between the call and its kernels
// (docs/performance.md, "Replayed launches").
#pragma once

#include <Python.h>

namespace fastrnn::python {

// store_plan(kind, tensors, flags, allocations, launches, results) -> bool: keeps the
// plan of a call (kind: forward or backward, launch.py's codes; tensors: its tensor
// arguments, None where absent; flags: its other arguments, integers) for the calls with
// its key (plan_key): the allocations it made, in order (results and workspaces), its
// launches (launch.replay_launch's), and its results (a tuple of tensors or lists of
// tensors, each an allocation or a view of one).  False where they cannot be kept
// (launches None, a pointer in none of the call's tensors and allocations, tensors that
// overlap, a result that is no allocation's): such calls are then never replayed.
PyObject* store_plan(PyObject*, PyObject* args);

// replay(kind, tensors, flags) -> the results of the call's plan after its allocations
// and launches; True where no plan is stored for such calls yet; None where they are
// never replayed (their plan could not be kept; tensors not 16-byte aligned; not CUDA
// tensors).  A plan's key holds every tensor's dtype, device, sizes and strides, so a
// call that matches one passes the argument checks its recorded call passed.
PyObject* replay(PyObject*, PyObject* args);

// clear_launch_plans() -> int: drops every kept plan; how many there were.
PyObject* clear_launch_plans(PyObject*, PyObject*);

// replay_launches_to(target): a list, to which each replayed call is appended, as
// ("call", ((address, bytes) of each allocation, ...)) and ("launch", function, grid_x,
// grid_y, threads, shared memory, parameter values) for each launch, in place of its
// launches, and which CPU tensors replay to (tests, tools/host_cost_cpu.py); None: the
// CUDA driver (the default).
PyObject* replay_launches_to(PyObject*, PyObject* target);

}  // namespace fastrnn::python
