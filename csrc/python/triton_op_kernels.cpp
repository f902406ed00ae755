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

// rnn_forward's or rnn_backward's kernel: the call replayed where it can be, else the
// Python kernel's.
class TritonOpKernel final : public c10::OperatorKernel {
 public:
  TritonOpKernel(int64_t kind, PyObject* python_kernel, PyObject* replay_tf32)
      : kind_(kind), python_kernel_(python_kernel), replay_tf32_(replay_tf32) {
    Py_INCREF(python_kernel_);
    Py_INCREF(replay_tf32_);
  }

  ~TritonOpKernel() override {
    if (!Py_IsInitialized()) return;  // the interpreter has gone, and its objects with it
    py::gil_scoped_acquire gil;
    Py_DECREF(python_kernel_);
    Py_DECREF(replay_tf32_);
  }

  void operator()(const c10::OperatorHandle& op, c10::DispatchKeySet, torch::jit::Stack* stack) {
    py::gil_scoped_acquire gil;
    if (!replayed(op, stack)) call_python(op, stack);
  }

 private:
  // The call on the stack replayed (its arguments replaced by its results) where
  // launch.replay_tf32 allows it, its input is padded and a plan is kept, with the
  // tensors and flags rnn_forward_triton / rnn_backward_triton key it by.
  bool replayed(const c10::OperatorHandle& op, torch::jit::Stack* stack) const {
    const size_t count = op.schema().arguments().size();
    const auto arguments = torch::jit::last(*stack, count);
    if (!arguments[kind_ == kForward ? 3 : 5].isNone()) return false;  // batch_sizes: packed
    PyObject* tf32 = PyObject_CallNoArgs(replay_tf32_);
    if (tf32 == nullptr) throw python_error();
    const bool replays = tf32 != Py_None;
    const int64_t tf32_allowed = tf32 == Py_True;
    Py_DECREF(tf32);
    if (!replays) return false;
    Tensors tensors;
    Flags flags;
    at::Device device = at::kCPU;
    if (kind_ == kForward) {  // (input, hx, weights, batch_sizes, num_layers, bidirectional, relu)
      device = arguments[0].toTensor().device();
      tensors = {arguments[0].toTensor(), ivalue_tensor(arguments[1])};
      add_weights(tensors, arguments[2]);
      flags = {arguments[4].toInt(), arguments[5].toBool(), arguments[6].toBool(), tf32_allowed};
    } else {  // (grad_output, grad_h_n, input, hx, weights, batch_sizes, output,
              // layer_outputs, num_layers, bidirectional, relu, need_input_grad, need_hx_grad)
      device = arguments[2].toTensor().device();
      tensors = {ivalue_tensor(arguments[0]), ivalue_tensor(arguments[1]),
                 arguments[2].toTensor(), ivalue_tensor(arguments[3])};
      add_weights(tensors, arguments[4]);
      tensors.emplace_back(arguments[6].toTensor());
      tensors.emplace_back(arguments[7].toTensor());
      flags = {arguments[8].toInt(),   arguments[9].toBool(),  arguments[10].toBool(),
               arguments[11].toBool(), arguments[12].toBool(), tf32_allowed};
    }
    c10::OptionalDeviceGuard guard(device);  // as the Python kernels' on_device_of
    Replayed replayed = replay_call(kind_, std::move(tensors), flags);
    if (replayed.status != ReplayStatus::Replayed) return false;
    torch::jit::drop(*stack, count);
    for (ReplayResult& result : replayed.results) {
      if (result.list) {
        stack->emplace_back(c10::List<at::Tensor>(result.tensors));
      } else {
        stack->emplace_back(std::move(result.tensors[0]));
      }
    }
    return true;
  }

  // The Python kernel called with the call's arguments; its results on the stack.
  void call_python(const c10::OperatorHandle& op, torch::jit::Stack* stack) const {
    const auto& schema = op.schema();
    const size_t count = schema.arguments().size();
    py::tuple arguments(count);
    for (size_t i = 0; i < count; ++i) {
      arguments[i] = torch::jit::toPyObject(std::move((*stack)[stack->size() - count + i]));
    }
    torch::jit::drop(*stack, count);
    const auto results =
        py::reinterpret_steal<py::object>(PyObject_Call(python_kernel_, arguments.ptr(), nullptr));
    if (!results) throw python_error();
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
};

constexpr const char* kCapsuleName = "fastrnn.triton_op_kernels";

}  // namespace

PyObject* register_triton_kernels(PyObject*, PyObject* args) {
  HANDLE_TH_ERRORS
  const char* key_name;
  PyObject *forward, *backward, *replay_tf32;
  if (!PyArg_ParseTuple(args, "sOOO", &key_name, &forward, &backward, &replay_tf32)) {
    return nullptr;
  }
  auto library = std::make_unique<torch::Library>(
      torch::Library::IMPL, "fastrnn", c10::parseDispatchKey(key_name), __FILE__, __LINE__);
  const auto add = [&](const char* name, int64_t kind, PyObject* python_kernel) {
    library->impl(name, torch::CppFunction::makeFromBoxedFunctor(
                            std::make_unique<TritonOpKernel>(kind, python_kernel, replay_tf32)));
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
