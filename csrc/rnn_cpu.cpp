// CPU kernels of the fastrnn::rnn_forward / fastrnn::rnn_backward ops: the whole
// multi-layer, (bi)directional Elman RNN in one call.
//
// Layout.  A sequence is a dense [N, features] matrix whose rows are grouped by time
// step: step t owns rows [offset[t], offset[t] + batch_sizes[t]).  A padded input
// [T, B, I] is the case batch_sizes[t] == B, a PackedSequence the general case (batch
// sizes non-increasing, as pack_padded_sequence makes them).  Each layer writes its
// output for both directions into one [N, D*H] buffer, direction d in columns
// [d*H, (d+1)*H), which is directly the next layer's input: no concatenation, no copy
// of the input reversed.
//
// Forward of one (layer, direction): one GEMM writes the input projection of every
// step into the output buffer; then, per step, one GEMM accumulates h_prev @ W_hh^T
// onto that step's rows and one fused pass adds both biases and applies the
// activation in place.  Nothing is allocated inside the step loop.
//
// Backward: per step in reverse order, dz_t = (dy_t + dh) * act'(y_t) from the saved
// outputs, then dh = dz_t @ W_hh; afterwards the weight gradients are single GEMMs over
// all steps (dW_ih = dZ^T X, dW_hh = dZ^T H_prev, db = sum of dZ rows) and the input
// gradient is dZ @ W_ih.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/ParallelGuard.h>
#include <torch/library.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <vector>

#include "activation.h"
#include "cpu_blas.h"

namespace fastrnn {
namespace {

// Rows of the recurrence grouped by time step.
struct StepLayout {
  int64_t steps = 0;       // T
  int64_t batch = 0;       // B = batch_sizes[0]
  int64_t rows = 0;        // N = sum of batch_sizes
  std::vector<int64_t> batch_sizes;
  std::vector<int64_t> offsets;

  // Rows of step t+1 (0 past the end): rows [next_batch(t), batch_sizes[t]) of step t
  // have no successor at t+1.
  int64_t next_batch(int64_t t) const { return t + 1 < steps ? batch_sizes[t + 1] : 0; }
};

// True when hx was given (None means a zero initial state).
bool given(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

StepLayout make_layout(const at::Tensor& input, const std::optional<at::Tensor>& batch_sizes,
                       const std::optional<at::Tensor>& hx) {
  StepLayout layout;
  if (given(batch_sizes)) {
    TORCH_CHECK(given(hx), "fastrnn: packed input needs hx (its batch size, batch_sizes[0], "
                "is data a traced graph cannot see); pass zeros of shape "
                "[num_layers * num_directions, batch_sizes[0], hidden_size]");
    TORCH_CHECK(input.dim() == 2, "fastrnn: packed input must be 2-D [N, input_size], got ",
                input.dim(), "-D");
    const at::Tensor sizes = batch_sizes->to(at::kCPU, at::kLong).contiguous();
    TORCH_CHECK(sizes.dim() == 1, "fastrnn: batch_sizes must be 1-D, got ", sizes.dim(), "-D");
    layout.steps = sizes.numel();
    const int64_t* data = sizes.data_ptr<int64_t>();
    layout.batch_sizes.assign(data, data + layout.steps);
    layout.batch = layout.steps > 0 ? layout.batch_sizes[0] : hx->size(1);
  } else {
    TORCH_CHECK(input.dim() == 3, "fastrnn: input must be 3-D [T, B, input_size], got ",
                input.dim(), "-D");
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
                bs, " at step ", t);
    layout.offsets[t] = offset;
    offset += bs;
  }
  layout.rows = offset;
  const int64_t input_rows = input.dim() == 3 ? input.size(0) * input.size(1) : input.size(0);
  TORCH_CHECK(layout.rows == input_rows, "fastrnn: batch_sizes sum to ", layout.rows,
              " but the packed input has ", input_rows, " rows");
  TORCH_CHECK(!given(hx) || (hx->dim() == 3 && hx->size(1) == layout.batch),
              "fastrnn: hx must be [num_layers * num_directions, ", layout.batch,
              ", hidden_size], got ", hx->sizes());
  return layout;
}

struct Geometry {
  int64_t layers, directions, hidden, weights_per_cell;
  bool has_bias;
};

Geometry make_geometry(const at::Tensor& input, const std::optional<at::Tensor>& hx,
                       const std::vector<at::Tensor>& weights, int64_t num_layers,
                       bool bidirectional) {
  Geometry g;
  g.layers = num_layers;
  g.directions = bidirectional ? 2 : 1;
  TORCH_CHECK(num_layers >= 1, "fastrnn: num_layers must be >= 1, got ", num_layers);
  const int64_t cells = g.layers * g.directions;
  TORCH_CHECK(weights.size() >= 2 && weights[1].dim() >= 1,
              "fastrnn: weights must start with weight_ih_l0 and weight_hh_l0");
  g.hidden = weights[1].size(0);  // weight_hh_l0: [H, H]
  if (given(hx)) {
    TORCH_CHECK(hx->size(0) == cells && hx->size(2) == g.hidden,
                "fastrnn: hx must be [num_layers * num_directions, batch, hidden_size] = [",
                cells, ", batch, ", g.hidden, "], got ", hx->sizes());
    TORCH_CHECK(hx->scalar_type() == input.scalar_type(), "fastrnn: hx dtype (",
                hx->scalar_type(), ") must match input dtype (", input.scalar_type(), ")");
  }
  TORCH_CHECK(static_cast<int64_t>(weights.size()) == 2 * cells ||
                  static_cast<int64_t>(weights.size()) == 4 * cells,
              "fastrnn: expected ", 2 * cells, " (no bias) or ", 4 * cells,
              " weight tensors, got ", weights.size());
  g.weights_per_cell = static_cast<int64_t>(weights.size()) / cells;
  g.has_bias = g.weights_per_cell == 4;
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
              "fastrnn: the C++ CPU kernels support float32 and float64, got ",
              input.scalar_type());
  for (int64_t l = 0; l < g.layers; ++l) {
    const int64_t in_size = l == 0 ? input.size(-1) : g.directions * g.hidden;
    for (int64_t d = 0; d < g.directions; ++d) {
      const int64_t base = (l * g.directions + d) * g.weights_per_cell;
      const auto& w_ih = weights[base];
      const auto& w_hh = weights[base + 1];
      TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) == g.hidden && w_ih.size(1) == in_size,
                  "fastrnn: weight_ih of layer ", l, " must be [", g.hidden, ", ", in_size,
                  "], got ", w_ih.sizes());
      TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) == g.hidden && w_hh.size(1) == g.hidden,
                  "fastrnn: weight_hh of layer ", l, " must be [", g.hidden, ", ", g.hidden,
                  "], got ", w_hh.sizes());
      for (int64_t i = 0; i < g.weights_per_cell; ++i) {
        const auto& w = weights[base + i];
        TORCH_CHECK(w.scalar_type() == input.scalar_type(), "fastrnn: weight dtype (",
                    w.scalar_type(), ") must match input dtype (", input.scalar_type(), ")");
        TORCH_CHECK(w.device().is_cpu(), "fastrnn: CPU kernel got a weight on ", w.device());
        if (i >= 2) {
          TORCH_CHECK(w.dim() == 1 && w.size(0) == g.hidden, "fastrnn: bias of layer ", l,
                      " must be [", g.hidden, "], got ", w.sizes());
        }
      }
    }
  }
  return g;
}

// Runs step(i, c0, c1) for i = 0 .. steps-1 over column slices [c0, c1) of the hidden
// dimension, one slice per thread when a step is big enough; step i+1 starts only once
// every slice of step i is done.  Splitting columns (not rows) gives each thread its own
// rows of W_hh, which then stay in that core's cache for the whole sequence, and lets it
// apply the activation to the columns it just computed without another pass.  Each
// thread's BLAS calls run single-threaded (BlasSingleThreadGuard).
//
// One OpenMP team runs the whole sequence and meets at an OpenMP barrier between steps,
// instead of a fork/join (at::parallel_for) per step.  Measured here, A/B in one process:
// - vs not splitting: T=1000, B=8, H=64 inference 1.14 vs 1.62 ms, T=50, B=16, H=512
//   2.92 vs 3.56 ms, T=100, B=32, H=128 0.96 vs 1.06 ms;
// - vs a hand-written spin barrier: as fast when the machine is idle (1.14 vs 1.06 ms),
//   but with one other busy process on the 2 cores the spin barrier fell to 7.5-56 ms at
//   T=1000 (a descheduled peer keeps the other thread spinning), libgomp's barrier, which
//   stops spinning when threads outnumber free cores, to 1.96 ms (not splitting: 3.27,
//   nn.RNN: 13.5).
// Split only from kSplitMacs multiply-adds per step: at B=1, H=128 (16k) the split made
// T=25 30% slower; at B=8, H=64 (32k) it made T=1000 1.5x faster.
constexpr int64_t kSplitMacs = int64_t{1} << 15;

template <typename Fn>
void for_each_step(int64_t steps, int64_t batch, int64_t H, const Fn& step) {
#ifdef _OPENMP
  const int64_t threads = at::get_num_threads();
  if (threads > 1 && batch * H * H >= kSplitMacs && !at::in_parallel_region()) {
    // Slices rounded up to 16 columns keep vector loops and cache lines whole.
    const int64_t slice = ((H + threads - 1) / threads + 15) / 16 * 16;
    const int64_t slices = (H + slice - 1) / slice;
    std::exception_ptr error;
    std::atomic<bool> failed{false};
    // No num_threads clause, as in ATen (GOMP's thread pool, pytorch#32008): the team
    // is whatever OpenMP gives (torch's thread count; 1 inside another active region),
    // and the slices are spread over the threads it has.
#pragma omp parallel
    {
      const int64_t team = omp_get_num_threads(), tid = omp_get_thread_num();
      const int64_t per = (slices + team - 1) / team;
      const int64_t first = std::min(slices, tid * per), last = std::min(slices, first + per);
      c10::ParallelGuard in_parallel(true);  // ATen calls in here run inline
      BlasSingleThreadGuard single_threaded_blas;
      for (int64_t i = 0; i < steps; ++i) {
        // Every thread reaches every barrier, also after a failure elsewhere.
        if (!failed.load(std::memory_order_relaxed)) {
          try {
            for (int64_t k = first; k < last; ++k) {
              step(i, k * slice, std::min(H, (k + 1) * slice));
            }
          } catch (...) {
#pragma omp critical(fastrnn_step_error)
            if (!failed.exchange(true)) error = std::current_exception();
          }
        }
#pragma omp barrier
      }
    }
    if (error) std::rethrow_exception(error);
    return;
  }
#endif
  // Steps run here are small (or there is one thread): MKL's own threads on them cost
  // more than they give (after torch.set_num_threads(2), T=1000, B=4, H=64 took 1.51 ms
  // with them, 0.75 ms without).
  BlasSingleThreadGuard single_threaded_blas;
  for (int64_t i = 0; i < steps; ++i) step(i, 0, H);
}

template <typename scalar_t>
void copy_rows(scalar_t* dst, int64_t ld_dst, const scalar_t* src, int64_t ld_src,
               int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) {
    std::memcpy(dst + i * ld_dst, src + i * ld_src, sizeof(scalar_t) * cols);
  }
}

// One (layer, direction) forward.  x: [N, in_size] dense; y: columns of a [N, ld_y]
// buffer; h0, h_n: [B, H] dense; h0 null for a zero initial state (its product skipped).
template <typename scalar_t>
void layer_forward(const StepLayout& s, const scalar_t* x, int64_t in_size, scalar_t* y,
                   int64_t ld_y, const scalar_t* w_ih, const scalar_t* w_hh,
                   const scalar_t* bias, const scalar_t* h0, scalar_t* h_n, int64_t H,
                   bool reverse, bool relu) {
  gemm<scalar_t>(false, true, s.rows, H, in_size, 1, x, in_size, w_ih, in_size, 0, y, ld_y);
  // c[:m, c0:c1] += a[:m] @ W_hh[c0:c1]^T.  (A hand-written small GEMM tied or lost to
  // MKL at every size tried, B=1..32, H=2..64, in an A/B run: 1.5 vs 2.2 ms at T=1000,
  // B=8, H=64.)
  auto recurrent_product = [&](scalar_t* c, const scalar_t* a, int64_t lda, int64_t m,
                               int64_t c0, int64_t c1) {
    gemm<scalar_t>(false, true, m, c1 - c0, H, 1, a, lda, w_hh + c0 * H, H, 1, c + c0, ld_y);
  };
  for_each_step(s.steps, s.batch, H, [&](int64_t i, int64_t c0, int64_t c1) {
    const int64_t t = reverse ? s.steps - 1 - i : i;
    const int64_t bs = s.batch_sizes[t];
    const int64_t nb = s.next_batch(t);
    scalar_t* y_t = y + s.offsets[t] * ld_y;
    if (!reverse) {
      // Every row of step t continues a row of step t-1 (batch sizes never grow).
      if (t > 0) {
        recurrent_product(y_t, y + s.offsets[t - 1] * ld_y, ld_y, bs, c0, c1);
      } else if (h0 != nullptr) {
        recurrent_product(y_t, h0, H, bs, c0, c1);
      }
    } else {
      // Rows that step t+1 also has continue from it; the others start here from h0.
      if (nb > 0) recurrent_product(y_t, y + s.offsets[t + 1] * ld_y, ld_y, nb, c0, c1);
      if (h0 != nullptr) recurrent_product(y_t + nb * ld_y, h0 + nb * H, H, bs - nb, c0, c1);
    }
    bias_activation_rows(y_t + c0, bs, c1 - c0, ld_y, bias == nullptr ? nullptr : bias + c0,
                         relu);
    if (!reverse) {
      // A sequence's final state is its last valid step: rows that end at step t.
      copy_rows(h_n + nb * H + c0, H, y_t + nb * ld_y + c0, ld_y, bs - nb, c1 - c0);
    }
  });
  if (s.steps == 0) {  // no steps: h_n is h0
    if (h0 != nullptr) {
      copy_rows(h_n, H, h0, H, s.batch, H);
    } else {
      std::fill(h_n, h_n + s.batch * H, scalar_t(0));
    }
  } else if (reverse) {
    copy_rows(h_n, H, y + s.offsets[0] * ld_y, ld_y, s.batch_sizes[0], H);
  }
}

// One (layer, direction) backward through time.  dy: gradient of this direction's
// output columns (ld_y), y: saved output (ld_y), dh: [B, H] holding grad of h_n on entry
// and grad of h0 on return (unless !need_h0_grad: then the last product is skipped),
// dz: [N, H] receives the pre-activation gradients.
template <typename scalar_t>
void layer_backward_through_time(const StepLayout& s, const scalar_t* dy, const scalar_t* y,
                                 int64_t ld_y, const scalar_t* w_hh, scalar_t* dh,
                                 scalar_t* dz, int64_t H, bool reverse, bool relu,
                                 bool need_h0_grad) {
  auto step_at = [&](int64_t i) { return reverse ? i : s.steps - 1 - i; };
  // dz of a step needs dh from the step processed before it; each thread computes dh
  // for its columns and, in the same pass, the next step's dz for those columns.
  auto pointwise = [&](int64_t t, int64_t c0, int64_t c1) {
    const int64_t off = s.offsets[t];
    activation_backward_rows(dz + off * H + c0, dy + off * ld_y + c0, dh + c0, y + off * ld_y + c0,
                             s.batch_sizes[t], c1 - c0, ld_y, H, relu);
  };
  if (s.steps > 0) pointwise(step_at(0), 0, H);
  for_each_step(s.steps, s.batch, H, [&](int64_t i, int64_t c0, int64_t c1) {
    const int64_t t = step_at(i);
    const int64_t bs = s.batch_sizes[t];
    // Rows not in this step keep their dh: either grad of h_n not reached yet, or
    // (reverse direction) the finished grad of h0.
    if (i + 1 < s.steps) {
      gemm<scalar_t>(false, false, bs, c1 - c0, H, 1, dz + s.offsets[t] * H, H, w_hh + c0, H,
                     0, dh + c0, H);
      pointwise(step_at(i + 1), c0, c1);
    } else if (need_h0_grad) {  // the last step's product is the gradient of h0
      gemm<scalar_t>(false, false, bs, c1 - c0, H, 1, dz + s.offsets[t] * H, H, w_hh + c0, H,
                     0, dh + c0, H);
    }
  });
}

// h_prev of every row, gathered into a dense [N, H] so dW_hh is one GEMM.
template <typename scalar_t>
void gather_previous_hidden(const StepLayout& s, const scalar_t* y, int64_t ld_y,
                            const scalar_t* h0, scalar_t* h_prev, int64_t H, bool reverse) {
  for (int64_t t = 0; t < s.steps; ++t) {
    const int64_t bs = s.batch_sizes[t];
    scalar_t* dst = h_prev + s.offsets[t] * H;
    if (!reverse) {
      if (t == 0) {
        copy_rows(dst, H, h0, H, bs, H);
      } else {
        copy_rows(dst, H, y + s.offsets[t - 1] * ld_y, ld_y, bs, H);
      }
    } else {
      const int64_t nb = s.next_batch(t);
      if (nb > 0) copy_rows(dst, H, y + s.offsets[t + 1] * ld_y, ld_y, nb, H);
      copy_rows(dst + nb * H, H, h0 + nb * H, H, bs - nb, H);
    }
  }
}

// dW_hh = dZ^T H_prev, H_prev holding each row's previous hidden state.  Padded input
// (every step B rows): H_prev is the output shifted by one step plus h0, so two GEMMs read
// it in place.  Packed input: steps have different row counts, so H_prev is gathered into
// the dense [N, H] scratch first.  (Reading in place saves an [N, H] copy per layer and
// direction: 6.5 MB at T=100, B=64, H=256.)  h0 null: a zero initial state, whose term is
// skipped (only padded input comes without h0).
template <typename scalar_t>
void recurrent_weight_grad(const StepLayout& s, bool packed, const scalar_t* dz,
                           const scalar_t* y, int64_t ld_y, const scalar_t* h0,
                           scalar_t* h_prev_scratch, scalar_t* grad_w_hh, int64_t H,
                           bool reverse) {
  if (packed || s.steps == 0) {
    gather_previous_hidden<scalar_t>(s, y, ld_y, h0, h_prev_scratch, H, reverse);
    gemm<scalar_t>(true, false, H, H, s.rows, 1, dz, H, h_prev_scratch, H, 0, grad_w_hh, H);
    return;
  }
  const int64_t B = s.batch, carried = s.rows - B;  // rows whose h_prev is an output row
  // Forward: rows of steps 1.. follow the output rows of steps ..T-2, step 0 follows h0.
  // Reverse: rows of steps ..T-2 follow those of steps 1.., step T-1 follows h0.
  const scalar_t* dz_carried = reverse ? dz : dz + B * H;
  const scalar_t* y_prev = reverse ? y + B * ld_y : y;
  const scalar_t* dz_first = reverse ? dz + carried * H : dz;
  gemm<scalar_t>(true, false, H, H, carried, 1, dz_carried, H, y_prev, ld_y, 0, grad_w_hh, H);
  if (h0 != nullptr) gemm<scalar_t>(true, false, H, H, B, 1, dz_first, H, h0, H, 1, grad_w_hh, H);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rnn_forward_cpu(
    const at::Tensor& input, const std::optional<at::Tensor>& hx, at::TensorList weights_list,
    const c10::optional<at::Tensor>& batch_sizes, int64_t num_layers, bool bidirectional,
    bool relu) {
  const std::vector<at::Tensor> weights = weights_list.vec();
  const StepLayout s = make_layout(input, batch_sizes, hx);
  const Geometry g = make_geometry(input, hx, weights, num_layers, bidirectional);
  const int64_t H = g.hidden, D = g.directions, DH = D * H;
  const int64_t in_size = input.size(-1);

  const at::Tensor x = dense(input);
  // Without hx the initial state is zero and its products are skipped (h0 pointers null).
  const at::Tensor h0 = given(hx) ? dense(*hx) : at::Tensor();
  std::vector<int64_t> out_shape = input.sizes().vec();
  out_shape.back() = DH;
  at::Tensor output = empty_cpu(out_shape, input.scalar_type());
  std::vector<int64_t> stacked_shape = out_shape;
  stacked_shape.insert(stacked_shape.begin(), g.layers - 1);
  at::Tensor layer_outputs = empty_cpu(stacked_shape, input.scalar_type());
  at::Tensor h_n = empty_cpu({g.layers * D, s.batch, H}, input.scalar_type());

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "fastrnn_rnn_forward_cpu", [&] {
    std::vector<scalar_t> bias(H);
    for (int64_t l = 0; l < g.layers; ++l) {
      const scalar_t* layer_in = l == 0 ? x.data_ptr<scalar_t>()
                                        : layer_outputs.data_ptr<scalar_t>() + (l - 1) * s.rows * DH;
      scalar_t* layer_out = l == g.layers - 1 ? output.data_ptr<scalar_t>()
                                              : layer_outputs.data_ptr<scalar_t>() + l * s.rows * DH;
      const int64_t layer_in_size = l == 0 ? in_size : DH;
      for (int64_t d = 0; d < D; ++d) {
        const int64_t cell = l * D + d;
        const int64_t base = cell * g.weights_per_cell;
        const at::Tensor w_ih = dense(weights[base]);
        const at::Tensor w_hh = dense(weights[base + 1]);
        if (g.has_bias) {
          const at::Tensor b_ih = dense(weights[base + 2]);
          const at::Tensor b_hh = dense(weights[base + 3]);
          // Pointers taken once: data_ptr() checks storage and dtype on every call, and
          // inside this loop that was ~10% of a T=1, H=128 forward (perf).
          const scalar_t* bi = b_ih.const_data_ptr<scalar_t>();
          const scalar_t* bh = b_hh.const_data_ptr<scalar_t>();
          for (int64_t j = 0; j < H; ++j) bias[j] = bi[j] + bh[j];
        }
        layer_forward<scalar_t>(s, layer_in, layer_in_size, layer_out + d * H, DH,
                                w_ih.data_ptr<scalar_t>(), w_hh.data_ptr<scalar_t>(),
                                g.has_bias ? bias.data() : nullptr,
                                h0.defined() ? h0.data_ptr<scalar_t>() + cell * s.batch * H
                                             : nullptr,
                                h_n.data_ptr<scalar_t>() + cell * s.batch * H, H, d == 1, relu);
      }
    }
  });
  return {output, h_n, layer_outputs};
}

std::tuple<at::Tensor, at::Tensor, std::vector<at::Tensor>> rnn_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& input,
    const std::optional<at::Tensor>& hx, at::TensorList weights_list,
    const c10::optional<at::Tensor>& batch_sizes, const at::Tensor& output,
    const at::Tensor& layer_outputs, int64_t num_layers, bool bidirectional, bool relu,
    bool need_input_grad) {
  const std::vector<at::Tensor> weights = weights_list.vec();
  const StepLayout s = make_layout(input, batch_sizes, hx);
  const Geometry g = make_geometry(input, hx, weights, num_layers, bidirectional);
  const int64_t H = g.hidden, D = g.directions, DH = D * H;
  const int64_t in_size = input.size(-1);
  TORCH_CHECK(grad_output.sizes() == output.sizes(), "fastrnn: grad_output must be ",
              output.sizes(), ", got ", grad_output.sizes());
  const std::vector<int64_t> state_shape{g.layers * D, s.batch, H};
  TORCH_CHECK(grad_h_n.sizes() == at::IntArrayRef(state_shape), "fastrnn: grad_h_n must be ",
              at::IntArrayRef(state_shape), ", got ", grad_h_n.sizes());

  const at::Tensor x = dense(input);
  const at::Tensor h0 = given(hx) ? dense(*hx) : at::Tensor();  // undefined: zeros
  const at::Tensor y_last = dense(output);
  const at::Tensor y_stack = dense(layer_outputs);
  at::Tensor grad_input = empty_cpu(need_input_grad ? x.sizes() : at::IntArrayRef{0}, x.scalar_type());
  // dh of every cell, grad of h_n on entry; it becomes the grad of hx in place, which is
  // returned only when hx was given (else the initial state is no input: [0]).
  at::Tensor grad_hx = dense_copy(grad_h_n);
  std::vector<at::Tensor> grad_weights;
  grad_weights.reserve(weights.size());
  for (const auto& w : weights) grad_weights.push_back(empty_cpu(w.sizes(), w.scalar_type()));

  at::Tensor dz = empty_cpu({s.rows, H}, x.scalar_type());
  const bool packed = given(batch_sizes);
  at::Tensor h_prev = empty_cpu({packed || s.steps == 0 ? s.rows : 0, H}, x.scalar_type());
  // Gradient w.r.t. the current layer's output: grad_output for the top layer, then the
  // input gradient of the layer above (ping-pong buffers for layers below the top).
  at::Tensor grad_y = dense(grad_output);
  at::Tensor grad_below;

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fastrnn_rnn_backward_cpu", [&] {
    for (int64_t l = g.layers - 1; l >= 0; --l) {
      const scalar_t* layer_in = l == 0 ? x.data_ptr<scalar_t>()
                                        : y_stack.data_ptr<scalar_t>() + (l - 1) * s.rows * DH;
      const scalar_t* layer_out = l == g.layers - 1 ? y_last.data_ptr<scalar_t>()
                                                    : y_stack.data_ptr<scalar_t>() + l * s.rows * DH;
      const int64_t layer_in_size = l == 0 ? in_size : DH;
      grad_below = l == 0 ? grad_input : empty_cpu({s.rows, DH}, x.scalar_type());
      scalar_t* d_in = grad_below.data_ptr<scalar_t>();
      for (int64_t d = 0; d < D; ++d) {
        const int64_t cell = l * D + d;
        const int64_t base = cell * g.weights_per_cell;
        const at::Tensor w_ih = dense(weights[base]);
        const at::Tensor w_hh = dense(weights[base + 1]);
        const bool reverse = d == 1;
        scalar_t* dh = grad_hx.data_ptr<scalar_t>() + cell * s.batch * H;
        const scalar_t* h0_cell =
            h0.defined() ? h0.data_ptr<scalar_t>() + cell * s.batch * H : nullptr;
        layer_backward_through_time<scalar_t>(s, grad_y.data_ptr<scalar_t>() + d * H,
                                              layer_out + d * H, DH, w_hh.data_ptr<scalar_t>(),
                                              dh, dz.data_ptr<scalar_t>(), H, reverse, relu,
                                              /*need_h0_grad=*/given(hx));
        const scalar_t* dz_p = dz.data_ptr<scalar_t>();
        gemm<scalar_t>(true, false, H, layer_in_size, s.rows, 1, dz_p, H, layer_in,
                       layer_in_size, 0, grad_weights[base].data_ptr<scalar_t>(), layer_in_size);
        recurrent_weight_grad<scalar_t>(s, packed, dz_p, layer_out + d * H, DH, h0_cell,
                                        h_prev.data_ptr<scalar_t>(),
                                        grad_weights[base + 1].data_ptr<scalar_t>(), H, reverse);
        if (g.has_bias) {
          scalar_t* db_ih = grad_weights[base + 2].data_ptr<scalar_t>();
          column_sums(dz_p, s.rows, H, db_ih);
          std::memcpy(grad_weights[base + 3].data_ptr<scalar_t>(), db_ih, sizeof(scalar_t) * H);
        }
        // Both directions read the same layer input: the second accumulates.
        if (l == 0 && !need_input_grad) continue;
        gemm<scalar_t>(false, false, s.rows, layer_in_size, H, 1, dz_p, H,
                       w_ih.data_ptr<scalar_t>(), layer_in_size, d == 0 ? 0 : 1, d_in,
                       layer_in_size);
      }
      grad_y = grad_below;
    }
  });
  if (!given(hx)) grad_hx = empty_cpu({0}, x.scalar_type());
  return {grad_input, grad_hx, grad_weights};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastrnn, CPU, m) {
  m.impl("rnn_forward", &rnn_forward_cpu);
  m.impl("rnn_backward", &rnn_backward_cpu);
}

}  // namespace fastrnn
