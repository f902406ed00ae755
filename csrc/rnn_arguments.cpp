// Argument checks of rnn_forward / rnn_backward, with nn.RNN-style messages: run by the
// CPU kernels and, through fastrnn._C, by the Triton launch functions.
#include "rnn_arguments.h"

#include <algorithm>

#include "message_text.h"
#include "ops.h"

namespace fastrnn {
namespace {

// nn.RNN's message (ATen's check_attributes) for a tensor on another device than input.
void check_device(const at::Tensor& input, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device() == input.device(), "Input and ", name,
              " tensors are not at the same device, found input tensor at ",
              text(input.device()), " and ", name, " tensor at ", text(t.device()));
}

}  // namespace

StepLayout make_layout(const at::Tensor& input, const std::optional<at::Tensor>& batch_sizes,
                       const std::optional<at::Tensor>& hx) {
  StepLayout layout;
  if (given(batch_sizes)) {
    TORCH_CHECK(given(hx), "fastrnn: packed input needs hx (its batch size, batch_sizes[0], "
                "is data a traced graph cannot see); pass zeros of shape "
                "[num_layers * num_directions, batch_sizes[0], hidden_size]");
    TORCH_CHECK(input.dim() == 2, "fastrnn: packed input must be 2-D [N, input_size], got ",
                text(input.dim()), "-D");
    const at::Tensor sizes = batch_sizes->to(at::kCPU, at::kLong).contiguous();
    TORCH_CHECK(sizes.dim() == 1, "fastrnn: batch_sizes must be 1-D, got ", text(sizes.dim()),
                "-D");
    layout.steps = sizes.numel();
    const int64_t* data = sizes.data_ptr<int64_t>();
    layout.batch_sizes.assign(data, data + layout.steps);
    layout.batch = layout.steps > 0 ? layout.batch_sizes[0] : hx->size(1);
  } else {
    TORCH_CHECK(input.dim() == 3, "fastrnn: input must be 3-D [T, B, input_size], got ",
                text(input.dim()), "-D");
    layout.steps = input.size(0);
    layout.batch = input.size(1);
    layout.batch_sizes.assign(layout.steps, layout.batch);
  }
  layout.offsets.resize(layout.steps);
  int64_t offset = 0;
  for (int64_t t = 0; t < layout.steps; ++t) {
    const int64_t bs = layout.batch_sizes[t];
    TORCH_CHECK(bs >= 0 && bs <= layout.batch && (t == 0 || bs <= layout.batch_sizes[t - 1]),
                "fastrnn: batch_sizes must be non-increasing and at most batch_sizes[0], got ",
                text(bs), " at step ", text(t));
    layout.offsets[t] = offset;
    offset += bs;
  }
  layout.rows = offset;
  const int64_t input_rows = input.dim() == 3 ? input.size(0) * input.size(1) : input.size(0);
  TORCH_CHECK(layout.rows == input_rows, "fastrnn: batch_sizes sum to ", text(layout.rows),
              " but the packed input has ", text(input_rows), " rows");
  TORCH_CHECK(!given(hx) || (hx->dim() == 3 && hx->size(1) == layout.batch),
              "fastrnn: hx must be [num_layers * num_directions, ", text(layout.batch),
              ", hidden_size], got ", text(hx->sizes()));
  return layout;
}

Geometry make_geometry(const at::Tensor& input, const std::optional<at::Tensor>& hx,
                       at::TensorList weights, int64_t num_layers, bool bidirectional) {
  TORCH_CHECK(num_layers >= 1, "fastrnn: num_layers must be >= 1, got ", text(num_layers));
  TORCH_CHECK(weights.size() >= 2 && weights[1].dim() >= 1,
              "fastrnn: weights must start with weight_ih_l0 and weight_hh_l0");
  Geometry g;
  g.layers = num_layers;
  g.directions = bidirectional ? 2 : 1;
  g.hidden = weights[1].size(0);  // weight_hh_l0: [H, H]
  const int64_t cells = g.cells();
  if (given(hx)) {
    check_device(input, *hx, "hidden");
    TORCH_CHECK(hx->size(0) == cells && hx->size(2) == g.hidden,
                "fastrnn: hx must be [num_layers * num_directions, batch, hidden_size] = [",
                text(cells), ", batch, ", text(g.hidden), "], got ", text(hx->sizes()));
    TORCH_CHECK(hx->scalar_type() == input.scalar_type(), "fastrnn: hx dtype (",
                hx->scalar_type(), ") must match input dtype (", input.scalar_type(), ")");
  }
  const auto num_weights = static_cast<int64_t>(weights.size());
  TORCH_CHECK(num_weights == 2 * cells || num_weights == 4 * cells, "fastrnn: expected ",
              text(2 * cells), " (no bias) or ", text(4 * cells), " weight tensors, got ",
              text(num_weights));
  g.weights_per_cell = num_weights / cells;
  g.has_bias = g.weights_per_cell == 4;
  for (int64_t l = 0; l < g.layers; ++l) {
    const int64_t in_size = l == 0 ? input.size(-1) : g.directions * g.hidden;
    for (int64_t d = 0; d < g.directions; ++d) {
      const int64_t base = g.first_weight(l * g.directions + d);
      const auto& w_ih = weights[base];
      const auto& w_hh = weights[base + 1];
      TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) == g.hidden && w_ih.size(1) == in_size,
                  "fastrnn: weight_ih of layer ", text(l), " must be [", text(g.hidden), ", ",
                  text(in_size), "], got ", text(w_ih.sizes()));
      TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) == g.hidden && w_hh.size(1) == g.hidden,
                  "fastrnn: weight_hh of layer ", text(l), " must be [", text(g.hidden), ", ",
                  text(g.hidden), "], got ", text(w_hh.sizes()));
      for (int64_t i = 0; i < g.weights_per_cell; ++i) {
        const auto& w = weights[base + i];
        TORCH_CHECK(w.scalar_type() == input.scalar_type(), "fastrnn: weight dtype (",
                    w.scalar_type(), ") must match input dtype (", input.scalar_type(), ")");
        check_device(input, w, "parameter");
        if (i >= 2) {
          TORCH_CHECK(w.dim() == 1 && w.size(0) == g.hidden, "fastrnn: bias of layer ",
                      text(l), " must be [", text(g.hidden), "], got ", text(w.sizes()));
        }
      }
    }
  }
  return g;
}

ForwardShapes forward_shapes(const at::Tensor& input, const StepLayout& s, const Geometry& g) {
  ForwardShapes shapes;
  shapes.output = input.sizes().vec();
  shapes.output.back() = g.directions * g.hidden;
  shapes.layer_outputs = shapes.output;
  shapes.layer_outputs.insert(shapes.layer_outputs.begin(), g.layers - 1);
  shapes.h_n = {g.cells(), s.batch, g.hidden};
  return shapes;
}

std::vector<at::Tensor> step_tables(const StepLayout& s, int64_t previous_directions,
                                    const at::Device& device) {
  const int64_t span = s.steps + s.steps % 2;
  at::Tensor tables =
      at::empty({2 * span + previous_directions * s.rows},
                at::TensorOptions().dtype(at::kLong).pinned_memory(device.is_cuda()));
  int64_t* sizes = tables.data_ptr<int64_t>();
  int64_t* offsets = sizes + span;
  std::copy(s.batch_sizes.begin(), s.batch_sizes.end(), sizes);
  std::copy(s.offsets.begin(), s.offsets.end(), offsets);
  if (span > s.steps) {  // the pad slots: never read
    sizes[s.steps] = offsets[s.steps] = 0;
  }
  for (int64_t d = 0; d < previous_directions; ++d) {
    int64_t* previous = offsets + span + d * s.rows;
    for (int64_t t = 0; t < s.steps; ++t) {
      const int64_t first = s.offsets[t];
      // Rows [0, has_previous) of step t take theirs from `from`, the rest from h0.
      const int64_t has_previous = d == 0 ? (t > 0 ? s.batch_sizes[t] : 0) : s.next_batch(t);
      const int64_t from = d == 0 ? (t > 0 ? s.offsets[t - 1] : 0) : first + s.batch_sizes[t];
      for (int64_t b = 0; b < s.batch_sizes[t]; ++b) {
        previous[first + b] = b < has_previous ? from + b : s.rows + b;
      }
    }
  }
  tables = tables.to(at::TensorOptions().device(device), /*non_blocking=*/true);
  std::vector<at::Tensor> views{tables.narrow(0, 0, s.steps), tables.narrow(0, span, s.steps)};
  for (int64_t d = 0; d < previous_directions; ++d) {
    views.push_back(tables.narrow(0, 2 * span + d * s.rows, s.rows));
  }
  return views;
}

void check_backward_arguments(const std::optional<at::Tensor>& grad_output,
                              const std::optional<at::Tensor>& grad_h_n,
                              const at::Tensor& input, const at::Tensor& output,
                              const at::Tensor& layer_outputs, const StepLayout& s,
                              const Geometry& g) {
  const ForwardShapes shapes = forward_shapes(input, s, g);
  TORCH_CHECK(output.sizes() == at::IntArrayRef(shapes.output), "fastrnn: output must be ",
              text(shapes.output), ", got ", text(output.sizes()));
  TORCH_CHECK(layer_outputs.sizes() == at::IntArrayRef(shapes.layer_outputs),
              "fastrnn: layer_outputs must be ", text(shapes.layer_outputs), ", got ",
              text(layer_outputs.sizes()));
  TORCH_CHECK(!given(grad_output) || grad_output->sizes() == output.sizes(),
              "fastrnn: grad_output must be ", text(output.sizes()), ", got ",
              text(grad_output->sizes()));
  TORCH_CHECK(!given(grad_h_n) || grad_h_n->sizes() == at::IntArrayRef(shapes.h_n),
              "fastrnn: grad_h_n must be ", text(shapes.h_n), ", got ",
              text(grad_h_n->sizes()));
  for (const auto* t : {&output, &layer_outputs}) {
    check_device(input, *t, "output");
    TORCH_CHECK(t->scalar_type() == input.scalar_type(), "fastrnn: output dtype (",
                t->scalar_type(), ") must match input dtype (", input.scalar_type(), ")");
  }
  for (const auto* t : {&grad_output, &grad_h_n}) {
    if (!given(*t)) continue;
    check_device(input, **t, "gradient");
    TORCH_CHECK((*t)->scalar_type() == input.scalar_type(), "fastrnn: gradient dtype (",
                (*t)->scalar_type(), ") must match input dtype (", input.scalar_type(), ")");
  }
}

}  // namespace fastrnn
