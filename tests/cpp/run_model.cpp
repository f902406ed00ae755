// A C++ program without Python that runs a model holding fastrnn modules, as a deployment
// does.  It is linked against fastrnn's op library (libfastrnn_ops.so), which registers
// the ops when it loads; tests/test_cpp_deployment.py builds and runs it.
//
//   run_model script MODEL INPUTS OUT   a torch.jit.save'd model: its outputs, then each
//                                       parameter's gradient of the outputs' summed squares
//   run_model aoti PACKAGE INPUTS OUT   an AOTInductor package: its outputs
//
// INPUTS holds a list of tensors (torch.save); OUT gets a tuple of tensors (torch.load).
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

namespace {

std::vector<at::Tensor> load_tensors(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(file)),
                                std::istreambuf_iterator<char>());
  const c10::IValue list = torch::jit::pickle_load(bytes);
  std::vector<at::Tensor> tensors;
  for (const auto& element : list.toListRef()) {
    tensors.push_back(element.toTensor());
  }
  return tensors;
}

void save_tensors(const std::vector<at::Tensor>& tensors, const std::string& path) {
  // A tuple (a TensorList would pickle as a TorchScript type, which torch.load refuses).
  const std::vector<char> bytes = torch::jit::pickle_save(
      c10::ivalue::Tuple::create(std::vector<c10::IValue>(tensors.begin(), tensors.end())));
  std::ofstream(path, std::ios::binary).write(bytes.data(), bytes.size());
}

// The scripted model's outputs (a tensor, or a tuple or list of them), then the gradient
// of every parameter, computed by the ops' C++ autograd.
std::vector<at::Tensor> run_script(const std::string& model_path,
                                   const std::vector<at::Tensor>& inputs) {
  torch::jit::Module model = torch::jit::load(model_path);
  const std::vector<c10::IValue> arguments(inputs.begin(), inputs.end());
  const c10::IValue result = model.forward(arguments);
  std::vector<at::Tensor> outputs;
  if (result.isTensor()) {
    outputs.push_back(result.toTensor());
  } else if (result.isTuple()) {
    for (const auto& element : result.toTupleRef().elements()) {
      outputs.push_back(element.toTensor());
    }
  } else {
    for (const auto& element : result.toListRef()) outputs.push_back(element.toTensor());
  }
  at::Tensor loss = at::zeros({}, outputs[0].options());
  for (const auto& output : outputs) loss = loss + output.square().sum();
  loss.backward();
  for (const auto& parameter : model.parameters()) outputs.push_back(parameter.grad());
  return outputs;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: run_model script|aoti MODEL INPUTS OUT\n";
    return 2;
  }
  const std::string mode = argv[1];
  const std::vector<at::Tensor> inputs = load_tensors(argv[3]);
  std::vector<at::Tensor> outputs;
  if (mode == "script") {
    outputs = run_script(argv[2], inputs);
  } else if (mode == "aoti") {
    torch::NoGradGuard no_grad;
    torch::inductor::AOTIModelPackageLoader package(argv[2]);
    outputs = package.run(inputs);
  } else {
    std::cerr << "run_model: unknown mode " << mode << " (expected script or aoti)\n";
    return 2;
  }
  save_tensors(outputs, argv[4]);
  return 0;
}
