// Replayed launches: the work of a padded forward or backward call (its allocations,
// kernel launches and ATen ops), recorded once per call signature by the ops' C++
// kernels (triton_op_kernels.h; launch.recorded, REPLAY_LAUNCHES) with its results, and
// from then on done from here: kernels straight to the CUDA driver, ops through the
// dispatcher, with no Python between the call and its kernels (docs/performance.md,
// "Replayed launches").
#pragma once

#include <Python.h>
#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace fastrnn::python {

// A call's tensor arguments (nullopt where absent) and its other arguments (integers).
using Tensors = std::vector<std::optional<at::Tensor>>;
using Flags = std::vector<int64_t>;

// An item of a replayed call's results: a tensor, or a list of tensors.
struct ReplayResult {
  bool list;
  std::vector<at::Tensor> tensors;
};

enum class ReplayStatus { Replayed, NoPlan, Never };

// What replay_call did: replayed the call (its results), or found no plan for such calls
// yet (the Python path records one), or found them never replayed.
struct Replayed {
  ReplayStatus status;
  std::vector<ReplayResult> results;
};

// The C++ side of replay() below: a call of `kind` replayed from its plan where one is
// kept, its tensors moved into the replay (left as they are where it is not replayed);
// under the GIL.
Replayed replay_call(int64_t kind, Tensors& call, const Flags& flags);

// The C++ side of store_plan() below: whether the plan was kept.
bool keep_plan(int64_t kind, const Tensors& call, const Flags& flags, PyObject* steps,
               PyObject* results);

// store_plan(kind, tensors, flags, steps, results) -> bool: keeps the plan of a call
// (kind: forward or backward, launch.py's codes; tensors: its tensor arguments, None where
// absent; flags: its other arguments, integers) for the calls with its key (plan_key):
// its steps in order, ("allocation", tensor), ("launch", ...) (launch.replay_launch's
// after the tag) and ("op", name, overload name, args, kwargs, returns), and its results
// (a tuple of tensors or lists of tensors, each made by a step or a view of one).  False
// where they cannot be kept (steps None; a pointer or an op's tensor in none of the
// call's tensors and what it made; tensors that overlap; an op's argument its schema does
// not take; a result the call did not make): such calls are then never replayed.
PyObject* store_plan(PyObject*, PyObject* args);

// replay(kind, tensors, flags) -> the results of the call's plan after its steps; True
// where no plan is stored for such calls yet; None where they are never replayed (their
// plan could not be kept; tensors not 16-byte aligned; not CUDA tensors).  A plan's key
// holds every tensor's dtype, device, sizes and strides, so a call that matches one
// passes the argument checks its recorded call passed.
PyObject* replay(PyObject*, PyObject* args);

// clear_launch_plans() -> int: drops every kept plan; how many there were.
PyObject* clear_launch_plans(PyObject*, PyObject*);

// replay_launches_to(target): a list, to which each replayed call's steps are appended
// in place of its launches, ("allocation", (address, bytes)), ("launch", function,
// grid_x, grid_y, threads, shared memory, cooperative, parameter values) and ("op", name,
// ((address, bytes) of each new tensor it returned, ...)), and which CPU tensors replay to
// (tests, tools/host_cost_cpu.py); None: the CUDA driver (the default).
PyObject* replay_launches_to(PyObject*, PyObject* target);

}  // namespace fastrnn::python
