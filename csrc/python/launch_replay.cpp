#include "launch_replay.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <dlfcn.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/python/pybind_utils.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "arguments.h"
#include "cuda_launch_config.h"

namespace fastrnn::python {
namespace {

namespace py = pybind11;

// A plan's tensors lie in slots: the call's tensor arguments (none: an empty slot), then
// what the call makes, in order: its allocations and the new tensors its ATen ops return.

// A kernel parameter as the launcher passes it: an address in a slot (`value` bytes past
// its start), an integer of 4 or 8 bytes, or a null pointer (Triton's scratch memory,
// which these kernels do not use).  The codes are launch.py's (_POINTER, _INT32, _INT64,
// _NULL; replay_launch).
enum class ParamKind : int64_t { Pointer = 0, Int32 = 1, Int64 = 2, Null = 3 };

struct Param {
  ParamKind kind;
  int64_t slot;   // Pointer only
  int64_t value;  // Pointer: the byte offset in its slot; integers: the value
};

struct Launch {
  uint64_t function;  // the compiled kernel's CUfunction
  unsigned grid_x, grid_y, threads, shared;
  bool cooperative;  // a cooperative launch: every program resident at once, or none runs
  std::vector<Param> params;
};

// An allocation the call makes (a result or a workspace), made again by each replay:
// contiguous, of these sizes, dtype and device.
struct Allocation {
  std::vector<int64_t> sizes;
  at::TensorOptions options;
};

// A tensor in a slot: the slot's tensor itself (whole), or a view of it, `offset`
// elements past its first.
struct TensorRef {
  size_t slot;
  bool whole;
  std::vector<int64_t> sizes, strides;
  int64_t offset;
};

// An ATen op the call makes (a GEMM, a reduction, a copy), called again by each replay
// through the dispatcher with the recorded arguments, its tensors rebuilt from slots.
struct OpCall {
  c10::OperatorHandle op;
  std::vector<c10::IValue> arguments;                  // tensor arguments left None here
  std::vector<std::pair<size_t, TensorRef>> tensors;  // (argument index, its tensor)
  std::vector<bool> new_slots;  // per return: a tensor in no slot yet, which becomes one
};

using Step = std::variant<Allocation, Launch, OpCall>;

// An item of the call's result tuple: a tensor, or a list of tensors.
struct ResultItem {
  bool list;
  std::vector<TensorRef> refs;
};

struct Plan {
  std::vector<Step> steps;
  std::vector<ResultItem> results;
};

// What a plan depends on besides the launch settings (launch.apply_settings drops every
// plan when one changes): the kind of call, its flags, and every tensor argument's
// dtype, device, sizes and strides.  The calls' argument checks, launches' integers and
// kernels' specialisations follow from these, given 16-byte aligned tensors (plan_key).
using Key = std::vector<int64_t>;

struct KeyHash {
  size_t operator()(const Key& key) const noexcept {
    uint64_t hash = 1469598103934665603ull;  // FNV-1a over the words
    for (int64_t word : key) {
      hash ^= static_cast<uint64_t>(word);
      hash *= 1099511628211ull;
    }
    return hash;
  }
};

// Each call signature's plan; null: such calls are never replayed.  Under the GIL, as
// every function here runs.  At most kMostPlans (a program of ever new shapes, lengths
// say, records again after that many).
std::unordered_map<Key, std::shared_ptr<const Plan>, KeyHash> plans;
constexpr size_t kMostPlans = 4096;
PyObject* launch_list = nullptr;  // replay_launches_to's list, or nullptr: the driver

bool aligned(const at::Tensor& tensor) {
  return reinterpret_cast<uintptr_t>(tensor.data_ptr()) % 16 == 0;
}

// The key of a call, or none where a tensor is not 16-byte aligned (its launches would
// take other specialisations of the kernels: launch.py's KernelLaunch).
std::optional<Key> plan_key(int64_t kind, const Tensors& tensors, const Flags& flags) {
  Key key{kind};
  key.insert(key.end(), flags.begin(), flags.end());
  for (const auto& tensor : tensors) {
    if (!tensor) {
      key.push_back(-1);
      continue;
    }
    if (!aligned(*tensor)) return std::nullopt;
    key.push_back(static_cast<int64_t>(tensor->scalar_type()));
    key.push_back(static_cast<int64_t>(tensor->device().type()));
    key.push_back(tensor->device().index());
    key.push_back(tensor->dim());
    key.insert(key.end(), tensor->sizes().begin(), tensor->sizes().end());
    key.insert(key.end(), tensor->strides().begin(), tensor->strides().end());
  }
  // Which tensors start where an earlier one does (the gradients of a sum's outputs are
  // one tensor, expanded twice): a pointer then has one address whichever it is said to
  // lie in.
  for (size_t i = 0; i < tensors.size(); ++i) {
    int64_t same = -1;
    for (size_t j = 0; j < i && tensors[i] && same < 0; ++j) {
      if (tensors[j] && tensors[j]->numel() > 0 && tensors[i]->numel() > 0 &&
          tensors[j]->data_ptr() == tensors[i]->data_ptr()) {
        same = static_cast<int64_t>(j);
      }
    }
    key.push_back(same);
  }
  return key;
}

// The bytes [begin, end) a tensor's elements span (none: begin == end).
struct Extent {
  uint64_t begin = 0, end = 0;
};

Extent extent(const at::Tensor& tensor) {
  if (tensor.numel() == 0) return {};
  int64_t last = 0;  // the last element's offset; strides are never negative
  for (int64_t d = 0; d < tensor.dim(); ++d) last += (tensor.size(d) - 1) * tensor.stride(d);
  const auto begin = reinterpret_cast<uint64_t>(tensor.data_ptr());
  return {begin, begin + static_cast<uint64_t>((last + 1) * tensor.element_size())};
}

// A call's slots as they stand: each one's tensor (undefined for an absent argument) and
// the bytes it spans.
struct Slots {
  std::vector<at::Tensor> tensors;
  std::vector<Extent> extents;

  void add(at::Tensor tensor) {
    extents.push_back(tensor.defined() ? extent(tensor) : Extent{});
    tensors.push_back(std::move(tensor));
  }
};

Slots call_slots(Tensors call) {
  Slots slots;
  slots.tensors.reserve(2 * call.size());  // room for what a call makes, mostly
  slots.extents.reserve(2 * call.size());
  for (auto& tensor : call) slots.add(tensor ? std::move(*tensor) : at::Tensor());
  return slots;
}

// Whether two slots overlap but start apart: a pointer in both would be rebuilt from the
// first, in a call where they may lie apart.  (Slots that start together are in the key.)
bool overlap(const std::vector<Extent>& slots) {
  for (size_t i = 0; i < slots.size(); ++i) {
    for (size_t j = i + 1; j < slots.size(); ++j) {
      const Extent &a = slots[i], &b = slots[j];
      if (a.begin < a.end && b.begin < b.end && a.begin < b.end && b.begin < a.end &&
          a.begin != b.begin) {
        return true;
      }
    }
  }
  return false;
}

Flags call_flags(PyObject* flags) {
  PyObject* items = PySequence_Fast(flags, "fastrnn: flags must be a sequence of integers");
  if (items == nullptr) throw python_error();
  Flags values;
  for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(items); ++i) {
    values.push_back(PyLong_AsLongLong(PySequence_Fast_GET_ITEM(items, i)));
  }
  Py_DECREF(items);
  if (PyErr_Occurred()) throw python_error();
  return values;
}

Tensors call_tensors(PyObject* list) {
  PyObject* items = PySequence_Fast(list, "fastrnn: the call's tensors must be a list");
  if (items == nullptr) throw python_error();
  Tensors result;
  result.reserve(PySequence_Fast_GET_SIZE(items));
  try {
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(items); ++i) {
      result.push_back(optional_tensor(PySequence_Fast_GET_ITEM(items, i)));
    }
  } catch (...) {
    Py_DECREF(items);
    throw;
  }
  Py_DECREF(items);
  return result;
}

// The device of a call: its first tensor's.
std::optional<at::Device> call_device(const Tensors& tensors) {
  for (const auto& tensor : tensors) {
    if (tensor) return tensor->device();
  }
  return std::nullopt;
}

// The CUDA driver's and torch's C entry points a launch needs, looked up in the libraries
// torch has loaded (this module builds without CUDA).
struct Driver {
  using Result = int;  // CUresult
  Result (*launch_kernel)(const LaunchConfig* config, void* function, void** params,
                          void** extra);  // cuLaunchKernelEx, as Triton's launcher
  Result (*get_error_string)(Result error, const char** text);
  Result (*ctx_get_current)(void** context);
  Result (*device_get)(int* device, int ordinal);
  Result (*primary_ctx_retain)(void** context, int device);
  Result (*ctx_set_current)(void* context);
  int32_t (*current_stream)(int32_t device, void** stream);  // torch's stable C shim
};

template <typename Function>
void look_up(Function& function, void* library, const char* name, const char* library_name) {
  function = reinterpret_cast<Function>(dlsym(library, name));
  TORCH_CHECK(function != nullptr, "fastrnn: replayed launches need ", name, " from ",
              library_name, ", which it does not have");
}

const Driver& driver() {
  static const Driver loaded = [] {
    void* cuda = dlopen("libcuda.so.1", RTLD_LAZY);
    TORCH_CHECK(cuda != nullptr, "fastrnn: replayed launches need the CUDA driver: ", dlerror());
    void* torch_cuda = dlopen("libtorch_cuda.so", RTLD_LAZY | RTLD_NOLOAD);
    TORCH_CHECK(torch_cuda != nullptr,
                "fastrnn: replayed launches need torch's CUDA library loaded: ", dlerror());
    const char* driver_library = "libcuda.so.1";
    Driver d;
    look_up(d.launch_kernel, cuda, "cuLaunchKernelEx", driver_library);
    look_up(d.get_error_string, cuda, "cuGetErrorString", driver_library);
    look_up(d.ctx_get_current, cuda, "cuCtxGetCurrent", driver_library);
    look_up(d.device_get, cuda, "cuDeviceGet", driver_library);
    look_up(d.primary_ctx_retain, cuda, "cuDevicePrimaryCtxRetain", driver_library);
    look_up(d.ctx_set_current, cuda, "cuCtxSetCurrent", driver_library);
    look_up(d.current_stream, torch_cuda, "aoti_torch_get_current_cuda_stream",
            "libtorch_cuda.so");
    return d;
  }();
  return loaded;
}

void check(const Driver& d, Driver::Result result, const char* what) {
  if (result == 0) return;
  const char* text = nullptr;
  d.get_error_string(result, &text);
  TORCH_CHECK(false, "fastrnn: ", what, " failed: ", text != nullptr ? text : "CUDA error ",
              result);
}

// The device's primary context current where the thread has none, as Triton's launcher
// makes it before a launch.
void ensure_context(const Driver& d, int device_index) {
  void* context = nullptr;
  check(d, d.ctx_get_current(&context), "cuCtxGetCurrent");
  if (context != nullptr) return;
  int device = 0;
  check(d, d.device_get(&device, device_index), "cuDeviceGet");
  check(d, d.primary_ctx_retain(&context, device), "cuDevicePrimaryCtxRetain");
  check(d, d.ctx_set_current(context), "cuCtxSetCurrent");
}

// A pointer's slot and offset; none where it lies in no slot.
std::optional<Param> pointer_param(uint64_t address, const std::vector<Extent>& slots) {
  for (size_t slot = 0; slot < slots.size(); ++slot) {
    if (slots[slot].begin <= address && address < slots[slot].end) {
      return Param{ParamKind::Pointer, static_cast<int64_t>(slot),
                   static_cast<int64_t>(address - slots[slot].begin)};
    }
  }
  return std::nullopt;
}

// A recorded launch, (function, grid_x, grid_y, threads, shared memory, cooperative,
// ((kind, value), ...)) after its tag, as a launch whose pointers are slots; none where a
// pointer lies in no slot.
std::optional<Launch> parse_launch(PyObject* record, const Slots& slots) {
  PyObject *tag, *function, *params;
  unsigned grid_x, grid_y, threads, shared;
  int cooperative;
  if (!PyArg_ParseTuple(record, "OOIIIIpO", &tag, &function, &grid_x, &grid_y, &threads,
                        &shared, &cooperative, &params)) {
    throw python_error();
  }
  Launch launch{PyLong_AsUnsignedLongLong(function), grid_x, grid_y, threads, shared,
                cooperative != 0, {}};
  if (PyErr_Occurred()) throw python_error();
  PyObject* items = PySequence_Fast(params, "fastrnn: parameters must be a sequence");
  if (items == nullptr) throw python_error();
  bool mapped = true;
  for (Py_ssize_t p = 0; p < PySequence_Fast_GET_SIZE(items) && mapped; ++p) {
    long long kind, value;
    if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(items, p), "LL", &kind, &value)) {
      Py_DECREF(items);
      throw python_error();
    }
    const auto param_kind = static_cast<ParamKind>(kind);
    if (param_kind == ParamKind::Pointer) {
      const auto param = pointer_param(static_cast<uint64_t>(value), slots.extents);
      mapped = param.has_value();
      if (mapped) launch.params.push_back(*param);
    } else if (param_kind == ParamKind::Int32 || param_kind == ParamKind::Int64 ||
               param_kind == ParamKind::Null) {
      launch.params.push_back({param_kind, 0, value});
    } else {
      Py_DECREF(items);
      TORCH_CHECK(false, "fastrnn: unknown launch parameter kind ", kind);
    }
  }
  Py_DECREF(items);
  if (!mapped) return std::nullopt;
  return launch;
}

// A tensor as a reference to a slot from `first` on: the slot's tensor itself, or a view
// within it of its dtype; none where it is neither.
std::optional<TensorRef> tensor_ref(const at::Tensor& tensor, const Slots& slots,
                                    size_t first = 0) {
  for (size_t s = first; s < slots.tensors.size(); ++s) {
    if (slots.tensors[s].defined() && tensor.is_same(slots.tensors[s])) {
      return TensorRef{s, true, {}, {}, 0};
    }
  }
  if (tensor.numel() == 0) return std::nullopt;
  const Extent part = extent(tensor);
  for (size_t s = first; s < slots.tensors.size(); ++s) {
    const Extent& whole = slots.extents[s];
    if (part.begin < whole.begin || part.begin >= whole.end) continue;
    const at::Tensor& base = slots.tensors[s];
    const auto bytes = static_cast<int64_t>(part.begin - whole.begin);
    if (part.end > whole.end || tensor.scalar_type() != base.scalar_type() ||
        bytes % base.element_size() != 0) {
      return std::nullopt;
    }
    return TensorRef{s, false, tensor.sizes().vec(), tensor.strides().vec(),
                     bytes / static_cast<int64_t>(base.element_size())};
  }
  return std::nullopt;
}

at::Tensor rebuilt(const TensorRef& ref, const std::vector<at::Tensor>& slot_tensors) {
  const at::Tensor& base = slot_tensors[ref.slot];
  if (ref.whole) return base;
  return base.as_strided(ref.sizes, ref.strides, base.storage_offset() + ref.offset);
}

// Whether an argument holds tensors in a list (a replay rebuilds single tensors only).
bool holds_listed_tensors(const c10::IValue& value) {
  if (!value.isList()) return false;
  for (const c10::IValue& item : value.toListRef()) {
    if (item.isTensor()) return true;
  }
  return false;
}

// A recorded ATen op, (name, overload name, args, kwargs, returns) after its tag, as an
// op call whose tensors are slots, its new returns added to slots; none where a tensor
// argument lies in no slot or is listed, or a new return is not on `device`, 16-byte
// aligned.
std::optional<OpCall> parse_op(PyObject* record, Slots& slots, const at::Device& device) {
  PyObject *tag, *returns;
  const char *name, *overload;
  PyObject *args, *kwargs;
  if (!PyArg_ParseTuple(record, "OssO!O!O!", &tag, &name, &overload, &PyTuple_Type, &args,
                        &PyDict_Type, &kwargs, &PyTuple_Type, &returns)) {
    throw python_error();
  }
  const auto op = c10::Dispatcher::singleton().findSchema({name, overload});
  if (!op) return std::nullopt;
  OpCall call{*op, {}, {}, {}};
  try {
    call.arguments = torch::jit::createStackForSchema(
        op->schema(), py::reinterpret_borrow<py::tuple>(args),
        py::reinterpret_borrow<py::kwargs>(kwargs), std::nullopt);
  } catch (const std::exception&) {  // arguments a schema does not take as IValues
    return std::nullopt;
  }
  for (size_t i = 0; i < call.arguments.size(); ++i) {
    c10::IValue& argument = call.arguments[i];
    if (holds_listed_tensors(argument)) return std::nullopt;
    if (!argument.isTensor() || !argument.toTensor().defined()) continue;
    const auto ref = tensor_ref(argument.toTensor(), slots);
    if (!ref) return std::nullopt;
    call.tensors.emplace_back(i, *ref);
    argument = c10::IValue();
  }
  std::vector<at::Tensor> returned;
  for (Py_ssize_t r = 0; r < PyTuple_GET_SIZE(returns); ++r) {
    returned.push_back(tensor(PyTuple_GET_ITEM(returns, r)));
  }
  if (returned.size() != op->schema().returns().size()) return std::nullopt;
  for (const at::Tensor& tensor : returned) {
    const bool in_slot = tensor_ref(tensor, slots).has_value();
    if (!in_slot && (tensor.device() != device || !aligned(tensor))) return std::nullopt;
    call.new_slots.push_back(!in_slot);
  }
  for (size_t r = 0; r < returned.size(); ++r) {
    if (call.new_slots[r]) slots.add(returned[r]);
  }
  return call;
}

// The recorded call's steps, ("allocation", tensor), ("launch", ...) (parse_launch) and
// ("op", ...) (parse_op), in order, with `slots` grown by what they make; none where one
// cannot be replayed.
std::optional<std::vector<Step>> parse_steps(PyObject* records, Slots& slots,
                                             const at::Device& device) {
  PyObject* items = PySequence_Fast(records, "fastrnn: a call's steps must be a sequence");
  if (items == nullptr) throw python_error();
  std::vector<Step> steps;
  try {
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(items); ++i) {
      PyObject* record = PySequence_Fast_GET_ITEM(items, i);
      TORCH_CHECK(PyTuple_Check(record) && PyTuple_GET_SIZE(record) > 0 &&
                      PyUnicode_Check(PyTuple_GET_ITEM(record, 0)),
                  "fastrnn: a call's step must be a tuple after its tag");
      const std::string tag = PyUnicode_AsUTF8(PyTuple_GET_ITEM(record, 0));
      if (tag == "allocation") {
        TORCH_CHECK(PyTuple_GET_SIZE(record) == 2, "fastrnn: ('allocation', tensor) expected");
        const at::Tensor allocation = tensor(PyTuple_GET_ITEM(record, 1));
        if (allocation.device() != device || !allocation.is_contiguous() ||
            !aligned(allocation)) {
          Py_DECREF(items);
          return std::nullopt;
        }
        steps.emplace_back(Allocation{allocation.sizes().vec(), allocation.options()});
        slots.add(allocation);
        continue;
      }
      std::optional<Step> step;
      if (tag == "launch") {
        if (auto launch = parse_launch(record, slots)) step = std::move(*launch);
      } else if (tag == "op") {
        if (auto call = parse_op(record, slots, device)) step = std::move(*call);
      } else {
        TORCH_CHECK(false, "fastrnn: unknown step ", tag);
      }
      if (!step) {
        Py_DECREF(items);
        return std::nullopt;
      }
      steps.push_back(std::move(*step));
    }
  } catch (...) {
    Py_DECREF(items);
    throw;
  }
  Py_DECREF(items);
  return steps;
}

// The recorded call's result tuple, items tensors or lists of tensors, as references to
// what it made (slots from `first`); none where one is not such a tensor or view.
std::optional<std::vector<ResultItem>> parse_results(PyObject* results, const Slots& slots,
                                                     size_t first) {
  TORCH_CHECK(PyTuple_Check(results), "fastrnn: a call's results must be a tuple");
  std::vector<ResultItem> items;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(results); ++i) {
    PyObject* item = PyTuple_GET_ITEM(results, i);
    ResultItem parsed{PyList_Check(item) != 0, {}};
    const Py_ssize_t count = parsed.list ? PyList_GET_SIZE(item) : 1;
    for (Py_ssize_t j = 0; j < count; ++j) {
      const auto ref =
          tensor_ref(tensor(parsed.list ? PyList_GET_ITEM(item, j) : item), slots, first);
      if (!ref) return std::nullopt;
      parsed.refs.push_back(*ref);
    }
    items.push_back(std::move(parsed));
  }
  return items;
}

// A launch's parameter values: slot addresses plus offsets, and the integers.
void parameter_values(const Launch& launch, const std::vector<Extent>& slots,
                      std::vector<uint64_t>& values) {
  values.assign(launch.params.size(), 0);
  for (size_t p = 0; p < launch.params.size(); ++p) {
    const Param& param = launch.params[p];
    switch (param.kind) {
      case ParamKind::Pointer:
        values[p] = slots[param.slot].begin + static_cast<uint64_t>(param.value);
        break;
      case ParamKind::Int32: {
        const auto word = static_cast<int32_t>(param.value);  // the driver reads 4 bytes
        std::memcpy(&values[p], &word, sizeof word);
        break;
      }
      case ParamKind::Int64:
        values[p] = static_cast<uint64_t>(param.value);
        break;
      case ParamKind::Null:
        break;
    }
  }
}

// replay_launches_to's records of a replayed call's steps: ("allocation", address,
// bytes), ("launch", function, grid_x, grid_y, threads, shared memory, cooperative,
// parameter values) and ("op", name, ((address, bytes) of each new tensor it returned, ...)).
void append_record(PyObject* record) {
  if (record == nullptr || PyList_Append(launch_list, record) != 0) {
    Py_XDECREF(record);
    throw python_error();
  }
  Py_DECREF(record);
}

PyObject* extent_tuple(const Extent& extent) {
  return Py_BuildValue("(KK)", static_cast<unsigned long long>(extent.begin),
                       static_cast<unsigned long long>(extent.end - extent.begin));
}

void append_allocation(const Extent& allocation) {
  append_record(Py_BuildValue("(sN)", "allocation", extent_tuple(allocation)));
}

void append_launch(const Launch& launch, const std::vector<uint64_t>& values) {
  PyObject* params = PyTuple_New(static_cast<Py_ssize_t>(values.size()));
  if (params == nullptr) throw python_error();
  for (size_t p = 0; p < values.size(); ++p) {
    const bool int32 = launch.params[p].kind == ParamKind::Int32;
    PyObject* value = int32 ? PyLong_FromLong(static_cast<int32_t>(values[p]))
                            : PyLong_FromUnsignedLongLong(values[p]);
    if (value == nullptr) {
      Py_DECREF(params);
      throw python_error();
    }
    PyTuple_SET_ITEM(params, p, value);
  }
  append_record(Py_BuildValue("(sKIIIINN)", "launch",
                              static_cast<unsigned long long>(launch.function), launch.grid_x,
                              launch.grid_y, launch.threads, launch.shared,
                              PyBool_FromLong(launch.cooperative), params));
}

void append_op(const OpCall& call, const std::vector<Extent>& new_slots) {
  PyObject* extents = PyTuple_New(static_cast<Py_ssize_t>(new_slots.size()));
  if (extents == nullptr) throw python_error();
  for (size_t i = 0; i < new_slots.size(); ++i) {
    PyObject* item = extent_tuple(new_slots[i]);
    if (item == nullptr) {
      Py_DECREF(extents);
      throw python_error();
    }
    PyTuple_SET_ITEM(extents, i, item);
  }
  const auto& name = call.op.schema().operator_name();
  const std::string full = name.overload_name.empty() ? name.name
                                                      : name.name + "." + name.overload_name;
  append_record(Py_BuildValue("(ssN)", "op", full.c_str(), extents));
}

// A replay in progress: the slots, and the stream its launches go to (found at its first).
struct Replay {
  Slots slots;
  const at::Device device;
  void* stream = nullptr;
  std::vector<uint64_t> values;
  std::vector<void*> pointers;

  void allocate(const Allocation& allocation) {
    slots.add(at::empty(allocation.sizes, allocation.options));
    // The caching allocator's blocks are aligned far beyond this; plans assume it.
    TORCH_CHECK(aligned(slots.tensors.back()), "fastrnn: an allocation was not 16-byte aligned");
    if (launch_list != nullptr) append_allocation(slots.extents.back());
  }

  void launch(const Launch& launch) {
    parameter_values(launch, slots.extents, values);
    if (launch_list != nullptr) {
      append_launch(launch, values);
      return;
    }
    const Driver& d = driver();
    if (stream == nullptr) {
      ensure_context(d, device.index());
      TORCH_CHECK(d.current_stream(device.index(), &stream) == 0,
                  "fastrnn: torch could not give the current CUDA stream of ", device);
    }
    pointers.resize(values.size());
    for (size_t p = 0; p < values.size(); ++p) pointers[p] = &values[p];
    LaunchAttribute cooperative{kLaunchAttributeCooperative, {}, {}};
    cooperative.value.cooperative = 1;
    const LaunchConfig config{launch.grid_x, launch.grid_y, 1, launch.threads, 1, 1,
                              launch.shared, stream, &cooperative, launch.cooperative ? 1u : 0u};
    check(d,
          d.launch_kernel(&config, reinterpret_cast<void*>(launch.function), pointers.data(),
                          nullptr),
          "a replayed kernel launch (cuLaunchKernelEx)");
  }

  void call(const OpCall& op_call) {
    torch::jit::Stack stack = op_call.arguments;
    for (const auto& [index, ref] : op_call.tensors) stack[index] = rebuilt(ref, slots.tensors);
    op_call.op.callBoxed(stack);
    TORCH_CHECK(stack.size() == op_call.new_slots.size(), "fastrnn: a replayed op returned ",
                stack.size(), " values where its recording returned ",
                op_call.new_slots.size());
    const size_t first_new = slots.tensors.size();
    for (size_t r = 0; r < stack.size(); ++r) {
      if (op_call.new_slots[r]) slots.add(stack[r].toTensor());
    }
    if (launch_list != nullptr) {
      append_op(op_call,
                std::vector<Extent>(slots.extents.begin() + first_new, slots.extents.end()));
    }
  }
};

PyObject* build_results(const std::vector<ReplayResult>& items) {
  PyObject* results = PyTuple_New(static_cast<Py_ssize_t>(items.size()));
  if (results == nullptr) throw python_error();
  for (size_t i = 0; i < items.size(); ++i) {
    const ReplayResult& item = items[i];
    PyObject* built = item.list ? PyList_New(static_cast<Py_ssize_t>(item.tensors.size()))
                                : THPVariable_Wrap(item.tensors[0]);
    if (built == nullptr) {
      Py_DECREF(results);
      throw python_error();
    }
    for (size_t j = 0; item.list && j < item.tensors.size(); ++j) {
      PyObject* tensor = THPVariable_Wrap(item.tensors[j]);
      if (tensor == nullptr) {
        Py_DECREF(built);
        Py_DECREF(results);
        throw python_error();
      }
      PyList_SET_ITEM(built, j, tensor);
    }
    PyTuple_SET_ITEM(results, i, built);
  }
  return results;
}

}  // namespace

bool keep_plan(int64_t kind, const Tensors& call, const Flags& flags, PyObject* records,
               PyObject* results) {
  const auto key = plan_key(kind, call, flags);
  const auto device = call_device(call);
  if (!key || !device) return false;
  if (plans.size() >= kMostPlans) plans.clear();
  std::shared_ptr<const Plan>& kept = plans[*key];
  kept.reset();  // never replayed, unless all below holds
  if (records == Py_None) return false;
  Slots slots = call_slots(call);
  auto steps = parse_steps(records, slots, *device);
  if (!steps || overlap(slots.extents)) return false;
  auto items = parse_results(results, slots, call.size());
  if (!items) return false;
  kept = std::make_shared<const Plan>(Plan{std::move(*steps), std::move(*items)});
  return true;
}

PyObject* store_plan(PyObject*, PyObject* args) {
  HANDLE_TH_ERRORS
  long long kind;
  PyObject *tensor_list, *flags, *records, *results;
  if (!PyArg_ParseTuple(args, "LOOOO", &kind, &tensor_list, &flags, &records, &results)) {
    return nullptr;
  }
  return PyBool_FromLong(
      keep_plan(kind, call_tensors(tensor_list), call_flags(flags), records, results));
  END_HANDLE_TH_ERRORS
}

Replayed replay_call(int64_t kind, Tensors& call, const Flags& flags) {
  const auto device = call_device(call);
  if (!device || (!device->is_cuda() && launch_list == nullptr)) return {ReplayStatus::Never, {}};
  const auto key = plan_key(kind, call, flags);
  if (!key) return {ReplayStatus::Never, {}};
  const auto found = plans.find(*key);
  if (found == plans.end()) return {ReplayStatus::NoPlan, {}};
  if (!found->second) return {ReplayStatus::Never, {}};
  // Held for the replay: an op it calls may run Python that stores or drops plans.
  const std::shared_ptr<const Plan> held = found->second;
  Replay replay{call_slots(std::move(call)), *device};
  for (const Step& step : held->steps) {
    if (const auto* allocation = std::get_if<Allocation>(&step)) {
      replay.allocate(*allocation);
    } else if (const auto* launch = std::get_if<Launch>(&step)) {
      replay.launch(*launch);
    } else {
      replay.call(std::get<OpCall>(step));
    }
  }
  Replayed replayed{ReplayStatus::Replayed, {}};
  for (const ResultItem& item : held->results) {
    ReplayResult& result = replayed.results.emplace_back(ReplayResult{item.list, {}});
    for (const TensorRef& ref : item.refs) {
      result.tensors.push_back(rebuilt(ref, replay.slots.tensors));
    }
  }
  return replayed;
}

PyObject* replay(PyObject*, PyObject* args) {
  HANDLE_TH_ERRORS
  long long kind;
  PyObject *tensor_list, *flags;
  if (!PyArg_ParseTuple(args, "LOO", &kind, &tensor_list, &flags)) return nullptr;
  Tensors call = call_tensors(tensor_list);
  Replayed replayed = replay_call(kind, call, call_flags(flags));
  switch (replayed.status) {
    case ReplayStatus::NoPlan:
      Py_RETURN_TRUE;
    case ReplayStatus::Never:
      Py_RETURN_NONE;
    case ReplayStatus::Replayed:
      break;
  }
  return build_results(replayed.results);
  END_HANDLE_TH_ERRORS
}

PyObject* clear_launch_plans(PyObject*, PyObject*) {
  const size_t count = plans.size();
  plans.clear();
  return PyLong_FromSize_t(count);
}

PyObject* replay_launches_to(PyObject*, PyObject* target) {
  if (target != Py_None && !PyList_Check(target)) {
    PyErr_SetString(PyExc_TypeError, "fastrnn: replay_launches_to takes a list or None");
    return nullptr;
  }
  Py_XDECREF(launch_list);
  launch_list = target == Py_None ? nullptr : target;
  Py_XINCREF(launch_list);
  Py_RETURN_NONE;
}

}  // namespace fastrnn::python
