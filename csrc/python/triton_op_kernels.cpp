#include "triton_op_kernels.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/DeviceGuard.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/jit/python/pybind_utils.h>
#include <torch/library.h>

#include <memory>

#include "launch_replay.h"

namespace fastrnn::python {
namespace {

namespace py = pybind11;

// launch.py's codes of the kinds of call (_FORWARD, _BACKWARD).
constexpr int64_t kForward = 0, kBackward = 1;

std::optional<at::Tensor> ivalue_tensor(const c10::IValue& value) {
  if (value.isNone()) return std::nullopt;
  return value.toTensor();
}

void add_weights(Tensors& tensors, const c10::IValue& weights) {
  for (const at::Tensor& weight : weights.toTensorVector()) tensors.emplace_back(weight);
}

// A padded call's tensor arguments and flags, as plans are keyed by (launch_replay.h):
// its tensors in the order of the op's arguments, every weight in place of the list, and
// its integer and boolean arguments, then the TF32 flag.
struct CallKey {
  Tensors tensors;
  Flags flags;
  at::Device device = at::kCPU;  // the input's
};

CallKey call_key(int64_t kind, c10::ArrayRef<c10::IValue> arguments, bool tf32_allowed) {
  CallKey key;
  if (kind == kForward) {  // (input, hx, weights, batch_sizes, num_layers, bidirectional, relu)
    key.device = arguments[0].toTensor().device();
    key.tensors = {arguments[0].toTensor(), ivalue_tensor(arguments[1])};
    add_weights(key.tensors, arguments[2]);
    key.flags = {arguments[4].toInt(), arguments[5].toBool(), arguments[6].toBool(),
                 tf32_allowed};
  } else {  // (grad_output, grad_h_n, input, hx, weights, batch_sizes, output,
            // layer_outputs, num_layers, bidirectional, relu, need_input_grad, need_hx_grad)
    key.device = arguments[2].toTensor().device();
    key.tensors = {ivalue_tensor(arguments[0]), ivalue_tensor(arguments[1]),
                   arguments[2].toTensor(), ivalue_tensor(arguments[3])};
    add_weights(key.tensors, arguments[4]);
    key.tensors.emplace_back(arguments[6].toTensor());
    key.tensors.emplace_back(arguments[7].toTensor());
    key.flags = {arguments[8].toInt(),   arguments[9].toBool(),  arguments[10].toBool(),
                 arguments[11].toBool(), arguments[12].toBool(), tf32_allowed};
  }
  return key;
}

// rnn_forward's or rnn_backward's kernel: a padded call replayed where its plan is kept,
// recorded where none is yet (launch.recorded) and kept (keep_plan); every other call the
// Python kernel's.
class TritonOpKernel final : public c10::OperatorKernel {
 public:
  TritonOpKernel(int64_t kind, PyObject* python_kernel, PyObject* replay_tf32,
                 PyObject* recorded)
      : kind_(kind), python_kernel_(python_kernel), replay_tf32_(replay_tf32),
        recorded_(recorded) {
    for (PyObject* object : {python_kernel_, replay_tf32_, recorded_}) Py_INCREF(object);
  }

  ~TritonOpKernel() override {
    if (!Py_IsInitialized()) return;  // the interpreter has gone, and its objects with it
    py::gil_scoped_acquire gil;
    for (PyObject* object : {python_kernel_, replay_tf32_, recorded_}) Py_DECREF(object);
  }

  void operator()(const c10::OperatorHandle& op, c10::DispatchKeySet, torch::jit::Stack* stack) {
    py::gil_scoped_acquire gil;
    const size_t count = op.schema().arguments().size();
    const auto arguments = torch::jit::last(*stack, count);
    const bool packed = !arguments[kind_ == kForward ? 3 : 5].isNone();  // batch_sizes
    const std::optional<bool> tf32_allowed = packed ? std::nullopt : replay_tf32();
    if (!tf32_allowed) {
      run_python(op, stack);
      return;
    }
    CallKey key = call_key(kind_, arguments, *tf32_allowed);
    Replayed replayed{ReplayStatus::Never, {}};
    {
      c10::OptionalDeviceGuard guard(key.device);  // as the Python kernels' on_device_of
      replayed = replay_call(kind_, key.tensors, key.flags);
    }
    switch (replayed.status) {
      case ReplayStatus::Replayed:
        torch::jit::drop(*stack, count);
        for (ReplayResult& result : replayed.results) {
          if (result.list) {
            stack->emplace_back(c10::List<at::Tensor>(result.tensors));
          } else {
            stack->emplace_back(std::move(result.tensors[0]));
          }
        }
        return;
      case ReplayStatus::Never:
        run_python(op, stack);
        return;
      case ReplayStatus::NoPlan:
        break;
    }
    // (results, judged, steps): kept for calls like this one where judged.
    const py::tuple args = py::make_tuple(py::handle(python_kernel_), take_arguments(op, stack));
    const py::object record = call(recorded_, args);
    TORCH_CHECK(PyTuple_Check(record.ptr()) && PyTuple_GET_SIZE(record.ptr()) == 3,
                "fastrnn: launch.recorded must return (results, judged, steps)");
    PyObject* results = PyTuple_GET_ITEM(record.ptr(), 0);
    if (PyObject_IsTrue(PyTuple_GET_ITEM(record.ptr(), 1))) {
      keep_plan(kind_, key.tensors, key.flags, PyTuple_GET_ITEM(record.ptr(), 2), results);
    }
    push_results(op, stack, py::reinterpret_borrow<py::object>(results));
  }

 private:
  // The Python kernel called with the call's arguments; its results on the stack.
  void run_python(const c10::OperatorHandle& op, torch::jit::Stack* stack) const {
    push_results(op, stack, call(python_kernel_, take_arguments(op, stack)));
  }

  // launch.replay_tf32(): nullopt where no call is replayed now, else the TF32 flag.
  std::optional<bool> replay_tf32() const {
    const auto tf32 = py::reinterpret_steal<py::object>(PyObject_CallNoArgs(replay_tf32_));
    if (!tf32) throw python_error();
    if (tf32.is_none()) return std::nullopt;
    return tf32.ptr() == Py_True;
  }

  static py::object call(PyObject* function, const py::tuple& args) {
    auto result = py::reinterpret_steal<py::object>(PyObject_Call(function, args.ptr(), nullptr));
    if (!result) throw python_error();
    return result;
  }

  // The call's arguments, taken off the stack as Python objects.
  static py::tuple take_arguments(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
    const size_t count = op.schema().arguments().size();
    py::tuple arguments(count);
    for (size_t i = 0; i < count; ++i) {
      arguments[i] = torch::jit::toPyObject(std::move((*stack)[stack->size() - count + i]));
    }
    torch::jit::drop(*stack, count);
    return arguments;
  }

  // A Python kernel's results (a tuple), pushed on the stack by the schema's return types.
  static void push_results(const c10::OperatorHandle& op, torch::jit::Stack* stack,
                           const py::object& results) {
    const auto& schema = op.schema();
    const auto& returns = schema.returns();
    TORCH_CHECK(PyTuple_Check(results.ptr()) &&
                    static_cast<size_t>(PyTuple_GET_SIZE(results.ptr())) == returns.size(),
                "fastrnn: the Python kernel of ", schema.name(), " must return a tuple of ",
                returns.size());
    for (size_t i = 0; i < returns.size(); ++i) {
      stack->push_back(
          torch::jit::toIValue(PyTuple_GET_ITEM(results.ptr(), i), returns[i].type()));
    }
  }

  const int64_t kind_;
  PyObject* const python_kernel_;
  PyObject* const replay_tf32_;
  PyObject* const recorded_;
};

constexpr const char* kCapsuleName = "fastrnn.triton_op_kernels";

}  // namespace

PyObject* register_triton_kernels(PyObject*, PyObject* args) {
  HANDLE_TH_ERRORS
  const char* key_name;
  PyObject *forward, *backward, *replay_tf32, *recorded;
  if (!PyArg_ParseTuple(args, "sOOOO", &key_name, &forward, &backward, &replay_tf32,
                        &recorded)) {
    return nullptr;
  }
  auto library = std::make_unique<torch::Library>(
      torch::Library::IMPL, "fastrnn", c10::parseDispatchKey(key_name), __FILE__, __LINE__);
  const auto add = [&](const char* name, int64_t kind, PyObject* python_kernel) {
    auto kernel = std::make_unique<TritonOpKernel>(kind, python_kernel, replay_tf32, recorded);
    library->impl(name, torch::CppFunction::makeFromBoxedFunctor(std::move(kernel)));
  };
  add("rnn_forward", kForward, forward);
  add("rnn_backward", kBackward, backward);
  PyObject* handle = PyCapsule_New(library.get(), kCapsuleName, [](PyObject* capsule) {
    delete static_cast<torch::Library*>(PyCapsule_GetPointer(capsule, kCapsuleName));
  });
  if (handle == nullptr) throw python_error();
  library.release();  // the handle's now
  return handle;
  END_HANDLE_TH_ERRORS
}

}  // namespace fastrnn::python
