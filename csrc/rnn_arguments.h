// Checks the arguments of rnn_forward / rnn_backward on any device and derives what the
// kernels need from them: the step layout of the rows and the network's geometry.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <vector>

#include "library_api.h"

namespace fastrnn {

// Rows of the recurrence grouped by time step: step t owns rows
// [offsets[t], offsets[t] + batch_sizes[t]).  A padded [T, B, I] input is the case
// batch_sizes[t] == B; a PackedSequence the general case (non-increasing batch sizes).
struct StepLayout {
  int64_t steps = 0;  // T
  int64_t batch = 0;  // B = batch_sizes[0]
  int64_t rows = 0;   // N = sum of batch_sizes
  std::vector<int64_t> batch_sizes;
  std::vector<int64_t> offsets;

  // Rows of step t+1 (0 past the end): rows [next_batch(t), batch_sizes[t]) of step t
  // have no successor at t+1.
  int64_t next_batch(int64_t t) const { return t + 1 < steps ? batch_sizes[t + 1] : 0; }
};

FASTRNN_API StepLayout make_layout(const at::Tensor& input,
                                   const std::optional<at::Tensor>& batch_sizes,
                                   const std::optional<at::Tensor>& hx);

// Layers, directions and hidden size, after checking every weight's shape and dtype.
struct Geometry {
  int64_t layers, directions, hidden, weights_per_cell;
  bool has_bias;

  int64_t cells() const { return layers * directions; }
  // Index in the flat weight list of cell (layer * directions + direction)'s first weight.
  int64_t first_weight(int64_t cell) const { return cell * weights_per_cell; }
};

FASTRNN_API Geometry make_geometry(const at::Tensor& input,
                                   const std::optional<at::Tensor>& hx, at::TensorList weights,
                                   int64_t num_layers, bool bidirectional);

// The shapes of rnn_forward's results: output, the input's with D*H features;
// layer_outputs, the outputs of the L-1 layers below the last, stacked; h_n [L*D, B, H].
struct ForwardShapes {
  std::vector<int64_t> output, layer_outputs, h_n;
};

FASTRNN_API ForwardShapes forward_shapes(const at::Tensor& input, const StepLayout& s,
                                         const Geometry& g);

// A packed input's step layout as the Triton kernels read it, on `device`: the batch
// sizes, the offsets, then for each of `previous_directions` directions (1: reverse in
// time) where each row's h_prev lives in cat([y, h0]): a y row, or N + b for h0's row b.
// Row offsets[t] + b: forwards, step t-1's row offsets[t-1] + b (h0's at t = 0); in
// reverse, step t+1's row offsets[t+1] + b where that step has row b, else h0's.  Views
// of one int64 buffer written on the host (pinned for a CUDA device, so that its copy
// waits for neither side) and copied in one asynchronous piece; the batch sizes and the
// offsets each take an even number of slots, so that the offsets stay 16-byte aligned.
FASTRNN_API std::vector<at::Tensor> step_tables(const StepLayout& s,
                                                int64_t previous_directions,
                                                const at::Device& device);

// rnn_backward's own arguments beyond rnn_forward's: output, layer_outputs and the
// gradients (None: zeros) of the shapes and dtype the forward gives.
FASTRNN_API void check_backward_arguments(const std::optional<at::Tensor>& grad_output,
                                          const std::optional<at::Tensor>& grad_h_n,
                                          const at::Tensor& input, const at::Tensor& output,
                                          const at::Tensor& layer_outputs, const StepLayout& s,
                                          const Geometry& g);

}  // namespace fastrnn
