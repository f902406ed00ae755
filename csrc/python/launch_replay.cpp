#include "launch_replay.h"

#include <dlfcn.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <unordered_map>
#include <vector>

#include "arguments.h"

namespace fastrnn::python {
namespace {

// A kernel parameter as the launcher passes it: an address in one of the call's tensors
// (slot_extents' slot, `value` bytes past its start), an integer of 4 or 8 bytes, or a
// null pointer (Triton's scratch memory, which these kernels do not use).  The codes are
// launch.py's (_POINTER, _INT32, _INT64, _NULL; replay_launch).
enum class ParamKind : int64_t { Pointer = 0, Int32 = 1, Int64 = 2, Null = 3 };

struct Param {
  ParamKind kind;
  int64_t slot;   // Pointer only
  int64_t value;  // Pointer: the byte offset in its slot; integers: the value
};

struct Launch {
  uint64_t function;  // the compiled kernel's CUfunction
  unsigned grid_x, grid_y, threads, shared;
  std::vector<Param> params;
};

// An allocation the call makes (its results and workspaces), made again by each replay:
// contiguous, of these sizes, dtype and device.
struct Allocation {
  std::vector<int64_t> sizes;
  at::TensorOptions options;
};

// A result: an allocation itself (whole), or a view of it.
struct ResultRef {
  size_t allocation;
  bool whole;
  std::vector<int64_t> sizes, strides;
  int64_t offset;  // elements past the allocation's start
};

// An item of the call's result tuple: a tensor, or a list of tensors.
struct ResultItem {
  bool list;
  std::vector<ResultRef> refs;
};

struct Plan {
  std::vector<Allocation> allocations;
  std::vector<Launch> launches;
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

// Each call signature's plan; none: such calls are never replayed.  Under the GIL, as
// every function here runs.  At most kMostPlans (a program of ever new shapes, lengths
// say, records again after that many).
std::unordered_map<Key, std::optional<Plan>, KeyHash> plans;
constexpr size_t kMostPlans = 4096;
PyObject* launch_list = nullptr;  // replay_launches_to's list, or nullptr: the driver

using Tensors = std::vector<std::optional<at::Tensor>>;

bool aligned(const at::Tensor& tensor) {
  return reinterpret_cast<uintptr_t>(tensor.data_ptr()) % 16 == 0;
}

// The key of a call, or none where a tensor is not 16-byte aligned (its launches would
// take other specialisations of the kernels: launch.py's KernelLaunch).
std::optional<Key> plan_key(long long kind, const Tensors& tensors, PyObject* flags) {
  Key key{kind};
  PyObject* items = PySequence_Fast(flags, "fastrnn: flags must be a sequence of integers");
  if (items == nullptr) throw python_error();
  for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(items); ++i) {
    key.push_back(PyLong_AsLongLong(PySequence_Fast_GET_ITEM(items, i)));
  }
  Py_DECREF(items);
  if (PyErr_Occurred()) throw python_error();
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

// The slots a plan's pointers lie in: the call's tensors (none: empty), then its
// allocations, in order.
std::vector<Extent> slot_extents(const Tensors& tensors,
                                 const std::vector<at::Tensor>& allocations) {
  std::vector<Extent> slots;
  slots.reserve(tensors.size() + allocations.size());
  for (const auto& tensor : tensors) slots.push_back(tensor ? extent(*tensor) : Extent{});
  for (const at::Tensor& allocation : allocations) slots.push_back(extent(allocation));
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

// launch.py's records, (function, grid_x, grid_y, threads, shared memory, ((kind, value),
// ...)), as launches whose pointers are slots; none where a pointer lies in no slot.
std::optional<std::vector<Launch>> parse_launches(PyObject* records,
                                                  const std::vector<Extent>& slots) {
  std::vector<Launch> launches;
  PyObject* sequence = PySequence_Fast(records, "fastrnn: launches must be a sequence");
  if (sequence == nullptr) throw python_error();
  const auto drop = [&] { Py_DECREF(sequence); };
  try {
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(sequence); ++i) {
      PyObject *function, *params;
      unsigned grid_x, grid_y, threads, shared;
      if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(sequence, i), "OIIIIO", &function,
                            &grid_x, &grid_y, &threads, &shared, &params)) {
        throw python_error();
      }
      Launch launch{PyLong_AsUnsignedLongLong(function), grid_x, grid_y, threads, shared, {}};
      if (PyErr_Occurred()) throw python_error();
      PyObject* items = PySequence_Fast(params, "fastrnn: parameters must be a sequence");
      if (items == nullptr) throw python_error();
      bool mapped = true;
      for (Py_ssize_t p = 0; p < PySequence_Fast_GET_SIZE(items) && mapped; ++p) {
        PyObject* item = PySequence_Fast_GET_ITEM(items, p);
        long long kind, value;
        if (!PyArg_ParseTuple(item, "LL", &kind, &value)) {
          Py_DECREF(items);
          throw python_error();
        }
        const auto param_kind = static_cast<ParamKind>(kind);
        if (param_kind == ParamKind::Pointer) {
          const auto param = pointer_param(static_cast<uint64_t>(value), slots);
          mapped = param.has_value();
          if (mapped) launch.params.push_back(*param);
        } else {
          TORCH_CHECK(param_kind == ParamKind::Int32 || param_kind == ParamKind::Int64 ||
                          param_kind == ParamKind::Null,
                      "fastrnn: unknown launch parameter kind ", kind);
          launch.params.push_back({param_kind, 0, value});
        }
      }
      Py_DECREF(items);
      if (!mapped) {
        drop();
        return std::nullopt;
      }
      launches.push_back(std::move(launch));
    }
  } catch (...) {
    drop();
    throw;
  }
  drop();
  return launches;
}

// The CUDA driver's and torch's C entry points a launch needs, looked up in the libraries
// torch has loaded (this module builds without CUDA).
struct Driver {
  using Result = int;  // CUresult
  Result (*launch_kernel)(void* function, unsigned grid_x, unsigned grid_y, unsigned grid_z,
                          unsigned block_x, unsigned block_y, unsigned block_z,
                          unsigned shared, void* stream, void** params, void** extra);
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
    look_up(d.launch_kernel, cuda, "cuLaunchKernel", driver_library);
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

// replay_launches_to's records of a replayed call: ("call", ((address, bytes) of each
// allocation, ...)), then ("launch", function, grid_x, grid_y, threads, shared memory,
// parameter values) for each launch.
void append_record(PyObject* record) {
  if (record == nullptr || PyList_Append(launch_list, record) != 0) {
    Py_XDECREF(record);
    throw python_error();
  }
  Py_DECREF(record);
}

void append_call(const std::vector<Extent>& allocations) {
  PyObject* extents = PyTuple_New(static_cast<Py_ssize_t>(allocations.size()));
  if (extents == nullptr) throw python_error();
  for (size_t i = 0; i < allocations.size(); ++i) {
    PyObject* item = Py_BuildValue("(KK)", static_cast<unsigned long long>(allocations[i].begin),
                                   static_cast<unsigned long long>(allocations[i].end -
                                                                   allocations[i].begin));
    if (item == nullptr) {
      Py_DECREF(extents);
      throw python_error();
    }
    PyTuple_SET_ITEM(extents, i, item);
  }
  append_record(Py_BuildValue("(sN)", "call", extents));
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
  append_record(Py_BuildValue("(sKIIIIN)", "launch",
                              static_cast<unsigned long long>(launch.function), launch.grid_x,
                              launch.grid_y, launch.threads, launch.shared, params));
}

void run(const std::vector<Launch>& launches, const std::vector<Extent>& slots,
         const at::Device& device) {
  std::vector<uint64_t> values;
  std::vector<void*> pointers;
  if (launch_list != nullptr) {
    for (const Launch& launch : launches) {
      parameter_values(launch, slots, values);
      append_launch(launch, values);
    }
    return;
  }
  const Driver& d = driver();
  ensure_context(d, device.index());
  void* stream = nullptr;
  TORCH_CHECK(d.current_stream(device.index(), &stream) == 0,
              "fastrnn: torch could not give the current CUDA stream of ", device);
  for (const Launch& launch : launches) {
    parameter_values(launch, slots, values);
    pointers.resize(values.size());
    for (size_t p = 0; p < values.size(); ++p) pointers[p] = &values[p];
    check(d,
          d.launch_kernel(reinterpret_cast<void*>(launch.function), launch.grid_x,
                          launch.grid_y, 1, launch.threads, 1, 1, launch.shared, stream,
                          pointers.data(), nullptr),
          "a replayed kernel launch (cuLaunchKernel)");
  }
}

// A result of the recorded call as a reference to one of its allocations; none where it
// is not one or a view of one.
std::optional<ResultRef> result_ref(PyObject* object, const std::vector<at::Tensor>& allocations) {
  const at::Tensor result = tensor(object);
  for (size_t a = 0; a < allocations.size(); ++a) {
    if (result.is_same(allocations[a])) return ResultRef{a, true, {}, {}, 0};
  }
  const auto address = reinterpret_cast<uint64_t>(result.data_ptr());
  for (size_t a = 0; a < allocations.size(); ++a) {
    const at::Tensor& allocation = allocations[a];
    const Extent whole = extent(allocation), part = extent(result);
    if (result.numel() == 0 || result.scalar_type() != allocation.scalar_type() ||
        address < whole.begin || part.end > whole.end) {
      continue;
    }
    const auto bytes = static_cast<int64_t>(address - whole.begin);
    if (bytes % allocation.element_size() != 0) continue;
    return ResultRef{a, false, result.sizes().vec(), result.strides().vec(),
                     bytes / static_cast<int64_t>(allocation.element_size())};
  }
  return std::nullopt;
}

// The recorded call's result tuple, items tensors or lists of tensors, as references to
// its allocations; none where one is not.
std::optional<std::vector<ResultItem>> parse_results(PyObject* results,
                                                     const std::vector<at::Tensor>& allocations) {
  TORCH_CHECK(PyTuple_Check(results), "fastrnn: a call's results must be a tuple");
  std::vector<ResultItem> items;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(results); ++i) {
    PyObject* item = PyTuple_GET_ITEM(results, i);
    ResultItem parsed{PyList_Check(item) != 0, {}};
    const Py_ssize_t count = parsed.list ? PyList_GET_SIZE(item) : 1;
    for (Py_ssize_t j = 0; j < count; ++j) {
      const auto ref = result_ref(parsed.list ? PyList_GET_ITEM(item, j) : item, allocations);
      if (!ref) return std::nullopt;
      parsed.refs.push_back(*ref);
    }
    items.push_back(std::move(parsed));
  }
  return items;
}

PyObject* result_tensor(const ResultRef& ref, const std::vector<at::Tensor>& allocations) {
  const at::Tensor& allocation = allocations[ref.allocation];
  if (ref.whole) return THPVariable_Wrap(allocation);
  return THPVariable_Wrap(allocation.as_strided(ref.sizes, ref.strides, ref.offset));
}

PyObject* build_results(const std::vector<ResultItem>& items,
                        const std::vector<at::Tensor>& allocations) {
  PyObject* results = PyTuple_New(static_cast<Py_ssize_t>(items.size()));
  if (results == nullptr) throw python_error();
  for (size_t i = 0; i < items.size(); ++i) {
    const ResultItem& item = items[i];
    PyObject* built = item.list ? PyList_New(static_cast<Py_ssize_t>(item.refs.size()))
                                : result_tensor(item.refs[0], allocations);
    if (built == nullptr) {
      Py_DECREF(results);
      throw python_error();
    }
    for (size_t j = 0; item.list && j < item.refs.size(); ++j) {
      PyObject* tensor = result_tensor(item.refs[j], allocations);
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

PyObject* store_plan(PyObject*, PyObject* args) {
  HANDLE_TH_ERRORS
  long long kind;
  PyObject *tensor_list, *flags, *allocation_list, *launches, *results;
  if (!PyArg_ParseTuple(args, "LOOOOO", &kind, &tensor_list, &flags, &allocation_list,
                        &launches, &results)) {
    return nullptr;
  }
  const Tensors call = call_tensors(tensor_list);
  const auto key = plan_key(kind, call, flags);
  const auto device = call_device(call);
  if (!key || !device) Py_RETURN_FALSE;
  if (plans.size() >= kMostPlans) plans.clear();
  std::optional<Plan>& kept = plans[*key];
  kept.reset();  // never replayed, unless all below holds
  if (launches == Py_None) Py_RETURN_FALSE;
  const std::vector<at::Tensor> allocations = tensors(allocation_list);
  Plan plan;
  for (const at::Tensor& allocation : allocations) {
    if (allocation.device() != *device || !allocation.is_contiguous() || !aligned(allocation)) {
      Py_RETURN_FALSE;
    }
    plan.allocations.push_back({allocation.sizes().vec(), allocation.options()});
  }
  const std::vector<Extent> slots = slot_extents(call, allocations);
  if (overlap(slots)) Py_RETURN_FALSE;
  auto parsed = parse_launches(launches, slots);
  auto items = parse_results(results, allocations);
  if (!parsed || !items) Py_RETURN_FALSE;
  plan.launches = std::move(*parsed);
  plan.results = std::move(*items);
  kept = std::move(plan);
  Py_RETURN_TRUE;
  END_HANDLE_TH_ERRORS
}

PyObject* replay(PyObject*, PyObject* args) {
  HANDLE_TH_ERRORS
  long long kind;
  PyObject *tensor_list, *flags;
  if (!PyArg_ParseTuple(args, "LOO", &kind, &tensor_list, &flags)) return nullptr;
  const Tensors call = call_tensors(tensor_list);
  const auto device = call_device(call);
  if (!device || (!device->is_cuda() && launch_list == nullptr)) Py_RETURN_NONE;
  const auto key = plan_key(kind, call, flags);
  if (!key) Py_RETURN_NONE;
  const auto found = plans.find(*key);
  if (found == plans.end()) Py_RETURN_TRUE;
  if (!found->second) Py_RETURN_NONE;
  const Plan& plan = *found->second;
  std::vector<at::Tensor> allocations;
  allocations.reserve(plan.allocations.size());
  for (const Allocation& allocation : plan.allocations) {
    allocations.push_back(at::empty(allocation.sizes, allocation.options));
    // The caching allocator's blocks are aligned far beyond this; plans assume it.
    TORCH_CHECK(aligned(allocations.back()), "fastrnn: an allocation was not 16-byte aligned");
  }
  const std::vector<Extent> slots = slot_extents(call, allocations);
  if (launch_list != nullptr) {
    append_call(std::vector<Extent>(slots.end() - allocations.size(), slots.end()));
  }
  run(plan.launches, slots, *device);
  return build_results(plan.results, allocations);
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
