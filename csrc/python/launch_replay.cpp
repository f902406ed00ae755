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

// What a plan depends on besides the launch settings (launch.apply_settings drops every
// plan when one changes): the device, dtype, flags and the shapes and strides of every
// tensor argument.  Its launches' integer arguments and kernels' specialisations follow
// from these, given 16-byte aligned tensors (plan_key).
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

// Each call signature's launches; none: such calls are never replayed.  Under the GIL,
// as every function here runs.
std::unordered_map<Key, std::optional<std::vector<Launch>>, KeyHash> plans;
PyObject* launch_list = nullptr;  // replay_launches_to's list, or nullptr: the driver

bool aligned(const at::Tensor& tensor) {
  return reinterpret_cast<uintptr_t>(tensor.data_ptr()) % 16 == 0;
}

void append_tensor(Key& key, const at::Tensor& tensor) {
  key.push_back(tensor.dim());
  key.insert(key.end(), tensor.sizes().begin(), tensor.sizes().end());
  key.insert(key.end(), tensor.strides().begin(), tensor.strides().end());
}

// The key of a call, or none where a tensor is not 16-byte aligned (its launches would
// take other specialisations of the kernels: launch.py's KernelLaunch).
std::optional<Key> plan_key(const at::Tensor& input, const std::optional<at::Tensor>& hx,
                            const std::vector<at::Tensor>& weights, long long num_layers,
                            int bidirectional, int relu, int tf32) {
  if (!aligned(input) || (hx.has_value() && !aligned(*hx))) return std::nullopt;
  for (const at::Tensor& weight : weights) {
    if (!aligned(weight)) return std::nullopt;
  }
  Key key{static_cast<int64_t>(input.device().type()), input.device().index(),
          static_cast<int64_t>(input.scalar_type()), num_layers, bidirectional, relu, tf32};
  append_tensor(key, input);
  key.push_back(hx.has_value());
  if (hx.has_value()) append_tensor(key, *hx);
  key.push_back(static_cast<int64_t>(weights.size()));
  for (const at::Tensor& weight : weights) append_tensor(key, weight);
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

// The slots a plan's pointers lie in, in this order: input, hx (none: empty), each
// weight, output, h_n, layer_outputs.
std::vector<Extent> slot_extents(const at::Tensor& input, const std::optional<at::Tensor>& hx,
                                 const std::vector<at::Tensor>& weights,
                                 const ForwardResults& results) {
  std::vector<Extent> slots{extent(input), hx.has_value() ? extent(*hx) : Extent{}};
  for (const at::Tensor& weight : weights) slots.push_back(extent(weight));
  slots.push_back(extent(results.output));
  slots.push_back(extent(results.h_n));
  slots.push_back(extent(results.layer_outputs));
  return slots;
}

bool overlap(const std::vector<Extent>& slots) {
  for (size_t i = 0; i < slots.size(); ++i) {
    for (size_t j = i + 1; j < slots.size(); ++j) {
      const Extent &a = slots[i], &b = slots[j];
      if (a.begin < a.end && b.begin < b.end && a.begin < b.end && b.begin < a.end) return true;
    }
  }
  return false;
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

void* symbol(void* library, const char* name, const char* library_name) {
  void* address = dlsym(library, name);
  TORCH_CHECK(address != nullptr, "fastrnn: replayed launches need ", name, " from ",
              library_name, ", which it does not have");
  return address;
}

const Driver& driver() {
  static const Driver loaded = [] {
    void* cuda = dlopen("libcuda.so.1", RTLD_LAZY);
    TORCH_CHECK(cuda != nullptr, "fastrnn: replayed launches need the CUDA driver: ", dlerror());
    void* torch_cuda = dlopen("libtorch_cuda.so", RTLD_LAZY | RTLD_NOLOAD);
    TORCH_CHECK(torch_cuda != nullptr,
                "fastrnn: replayed launches need torch's CUDA library loaded: ", dlerror());
    Driver d;
    d.launch_kernel = reinterpret_cast<decltype(d.launch_kernel)>(
        symbol(cuda, "cuLaunchKernel", "libcuda.so.1"));
    d.get_error_string = reinterpret_cast<decltype(d.get_error_string)>(
        symbol(cuda, "cuGetErrorString", "libcuda.so.1"));
    d.ctx_get_current = reinterpret_cast<decltype(d.ctx_get_current)>(
        symbol(cuda, "cuCtxGetCurrent", "libcuda.so.1"));
    d.device_get =
        reinterpret_cast<decltype(d.device_get)>(symbol(cuda, "cuDeviceGet", "libcuda.so.1"));
    d.primary_ctx_retain = reinterpret_cast<decltype(d.primary_ctx_retain)>(
        symbol(cuda, "cuDevicePrimaryCtxRetain", "libcuda.so.1"));
    d.ctx_set_current = reinterpret_cast<decltype(d.ctx_set_current)>(
        symbol(cuda, "cuCtxSetCurrent", "libcuda.so.1"));
    d.current_stream = reinterpret_cast<decltype(d.current_stream)>(
        symbol(torch_cuda, "aoti_torch_get_current_cuda_stream", "libtorch_cuda.so"));
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

void append_to_list(const Launch& launch, const std::vector<uint64_t>& values) {
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
  PyObject* record = Py_BuildValue("(KIIIIN)", static_cast<unsigned long long>(launch.function),
                                   launch.grid_x, launch.grid_y, launch.threads, launch.shared,
                                   params);
  if (record == nullptr || PyList_Append(launch_list, record) != 0) {
    Py_XDECREF(record);
    throw python_error();
  }
  Py_DECREF(record);
}

void run(const std::vector<Launch>& launches, const std::vector<Extent>& slots,
         const at::Device& device) {
  std::vector<uint64_t> values;
  std::vector<void*> pointers;
  if (launch_list != nullptr) {
    for (const Launch& launch : launches) {
      parameter_values(launch, slots, values);
      append_to_list(launch, values);
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

}  // namespace

PyObject* store_forward_plan(PyObject*, PyObject* args) {
  HANDLE_TH_ERRORS
  PyObject *input, *hx, *weights, *results, *launches;
  long long num_layers;
  int bidirectional, relu, tf32;
  if (!PyArg_ParseTuple(args, "OOOLpppOO", &input, &hx, &weights, &num_layers, &bidirectional,
                        &relu, &tf32, &results, &launches)) {
    return nullptr;
  }
  const at::Tensor x = tensor(input);
  const auto h = optional_tensor(hx);
  const std::vector<at::Tensor> w = tensors(weights);
  const auto key = plan_key(x, h, w, num_layers, bidirectional, relu, tf32);
  PyObject *output, *h_n, *layer_outputs;
  if (!PyArg_ParseTuple(results, "OOO", &output, &h_n, &layer_outputs)) return nullptr;
  const ForwardResults call_results{tensor(output), tensor(layer_outputs), tensor(h_n)};
  if (!key || !aligned(call_results.output) || !aligned(call_results.h_n) ||
      !aligned(call_results.layer_outputs)) {
    Py_RETURN_FALSE;
  }
  const std::vector<Extent> slots = slot_extents(x, h, w, call_results);
  // Overlapping tensors: a pointer's slot would be ambiguous.
  auto parsed = launches == Py_None || overlap(slots)
                    ? std::nullopt
                    : parse_launches(launches, slots);
  const bool kept = parsed.has_value();
  plans[*key] = std::move(parsed);
  return PyBool_FromLong(kept);
  END_HANDLE_TH_ERRORS
}

PyObject* replay_forward(PyObject*, PyObject* args) {
  HANDLE_TH_ERRORS
  PyObject *input, *hx, *weights;
  long long num_layers;
  int bidirectional, relu, tf32;
  if (!PyArg_ParseTuple(args, "OOOLppp", &input, &hx, &weights, &num_layers, &bidirectional,
                        &relu, &tf32)) {
    return nullptr;
  }
  const at::Tensor x = tensor(input);
  if (!x.is_cuda() && launch_list == nullptr) Py_RETURN_NONE;
  const auto h = optional_tensor(hx);
  const std::vector<at::Tensor> w = tensors(weights);
  const auto key = plan_key(x, h, w, num_layers, bidirectional, relu, tf32);
  if (!key) Py_RETURN_NONE;
  const auto plan = plans.find(*key);
  if (plan == plans.end()) Py_RETURN_TRUE;
  if (!plan->second) Py_RETURN_NONE;
  const auto [layout, geometry] =
      checked_forward_arguments(x, h, w, Py_None, num_layers, bidirectional);
  const ForwardResults results = forward_results(x, layout, geometry);
  // The caching allocator's blocks are aligned far beyond this; plans assume it.
  TORCH_CHECK(aligned(results.output) && aligned(results.h_n) && aligned(results.layer_outputs),
              "fastrnn: rnn_forward's results were not 16-byte aligned");
  run(*plan->second, slot_extents(x, h, w, results), x.device());
  return Py_BuildValue("(NNN)", THPVariable_Wrap(results.output), THPVariable_Wrap(results.h_n),
                       THPVariable_Wrap(results.layer_outputs));
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
