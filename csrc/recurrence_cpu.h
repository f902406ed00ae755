// The recurrence of one (layer, direction) on the CPU, forward and backward through time.
//
// Layout.  A sequence is a dense [N, features] matrix whose rows are grouped by time step
// (StepLayout).  Each layer writes its output for both directions into one [N, D*H]
// buffer, direction d in columns [d*H, (d+1)*H), which is directly the next layer's
// input: no concatenation, no copy of the input reversed.
//
// Forward: one GEMM writes the input projection of every step into the output buffer;
// then, per step, one GEMM accumulates h_prev @ W_hh^T onto that step's rows and one
// fused pass adds the bias and applies the activation in place.  Nothing is allocated
// inside the step loop.
//
// Backward: per step in reverse order, dz_t = (dy_t + dh) * act'(y_t) from the saved
// outputs, then dh = dz_t @ W_hh; afterwards the weight gradients are single GEMMs over
// all steps (dW_ih = dZ^T X, dW_hh = dZ^T H_prev, db = column sums of dZ) and the input
// gradient is dZ @ W_ih.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "activation.h"
#include "cpu_blas.h"
#include "rnn_arguments.h"
#include "step_scheduler.h"

namespace fastrnn {

template <typename scalar_t>
void copy_rows(scalar_t* dst, int64_t ld_dst, const scalar_t* src, int64_t ld_src,
               int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) {
    std::memcpy(dst + i * ld_dst, src + i * ld_src, sizeof(scalar_t) * cols);
  }
}

// bias[:H] = b_ih + b_hh, the one bias the forward adds.
template <typename scalar_t>
void summed_bias(const at::Tensor& b_ih, const at::Tensor& b_hh, scalar_t* bias) {
  const at::Tensor bi = dense(b_ih), bh = dense(b_hh);
  // Pointers taken once: data_ptr() checks storage and dtype on every call.
  const scalar_t* bi_p = bi.const_data_ptr<scalar_t>();
  const scalar_t* bh_p = bh.const_data_ptr<scalar_t>();
  for (int64_t j = 0; j < bi.numel(); ++j) bias[j] = bi_p[j] + bh_p[j];
}

// A layer's input rows, features contiguous: row b of step t at data + t * step_stride +
// b * batch_stride.  Dense ([N, features], every packed input) unless layer 0 reads a
// batch_first input where it is: [B, T, I] memory, step_stride = I, batch_stride = T * I.
template <typename scalar_t>
struct LayerInput {
  const scalar_t* data;
  int64_t features, step_stride, batch_stride;

  static LayerInput dense(const scalar_t* data, int64_t features, int64_t batch) {
    return {data, features, batch * features, features};
  }
};

// The input's rows in blocks, each one GEMM operand of equally spaced rows:
// block(first, spacing, m, a, lda) for rows first, first + spacing, ... (m of them, in
// the step-major order t * B + b of every other buffer) at a, a + lda, ...  Dense input is
// one block; a batch_first input one block per step or per batch row, whichever are fewer.
template <typename scalar_t, typename Fn>
void for_each_row_block(const StepLayout& s, const LayerInput<scalar_t>& in, const Fn& block) {
  const bool dense = in.batch_stride == in.features && in.step_stride == s.batch * in.features;
  if (dense || s.rows == 0) {
    block(0, 1, s.rows, in.data, in.features);
  } else if (s.steps <= s.batch) {
    for (int64_t t = 0; t < s.steps; ++t) {
      block(t * s.batch, 1, s.batch, in.data + t * in.step_stride, in.batch_stride);
    }
  } else {
    for (int64_t b = 0; b < s.batch; ++b) {
      block(b, s.batch, s.steps, in.data + b * in.batch_stride, in.step_stride);
    }
  }
}

// y[:rows, :H] (rows ld_y apart) = x W_ih^T (x's rows ld_x apart), the input product of
// every step at once.  Returns the bias the activation pass still adds: bias itself, or
// null in bfloat16 / float16, whose GEMMs round their results: there the bias enters this
// GEMM, before its one rounding, rather than after two more (fewer relu masks flip than in
// nn.RNN's order).
template <typename scalar_t>
const scalar_t* input_projection(const scalar_t* x, int64_t ld_x, int64_t rows,
                                 int64_t in_size, const scalar_t* w_ih, const scalar_t* bias,
                                 scalar_t* y, int64_t ld_y, int64_t H) {
  if (!kAtenGemm<scalar_t> || bias == nullptr) {
    gemm<scalar_t>(false, true, rows, H, in_size, 1, x, ld_x, w_ih, in_size, 0, y, ld_y);
    return bias;
  }
  for (int64_t i = 0; i < rows; ++i) std::memcpy(y + i * ld_y, bias, sizeof(scalar_t) * H);
  gemm<scalar_t>(false, true, rows, H, in_size, 1, x, ld_x, w_ih, in_size, 1, y, ld_y);
  return nullptr;
}

// One (layer, direction) forward.  y: columns of a [N, ld_y] buffer; h0, h_n: [B, H]
// dense; h0 null for a zero initial state (its product skipped).
template <typename scalar_t>
void layer_forward(const StepLayout& s, const LayerInput<scalar_t>& x, scalar_t* y,
                   int64_t ld_y, const scalar_t* w_ih, const scalar_t* w_hh,
                   const scalar_t* bias, const scalar_t* h0, scalar_t* h_n, int64_t H,
                   bool reverse, bool relu) {
  const scalar_t* bias_left = bias;
  for_each_row_block(s, x, [&](int64_t first, int64_t spacing, int64_t m, const scalar_t* a,
                               int64_t lda) {
    bias_left = input_projection(a, lda, m, x.features, w_ih, bias, y + first * ld_y,
                                 spacing * ld_y, H);
  });
  bias = bias_left;
  // c[:m, c0:c1] += a[:m] @ W_hh[c0:c1]^T (BLAS: a hand-written small GEMM never beat it).
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

// dW_ih = dZ^T X over every row of the layer (one GEMM for a dense input).
template <typename scalar_t>
void input_weight_grad(const StepLayout& s, const LayerInput<scalar_t>& x, const scalar_t* dz,
                       scalar_t* grad_w_ih, int64_t H) {
  for_each_row_block(s, x, [&](int64_t first, int64_t spacing, int64_t m, const scalar_t* a,
                               int64_t lda) {
    // The block holding row 0 comes first and writes dW_ih; the others add to it.
    gemm<scalar_t>(true, false, H, x.features, m, 1, dz + first * H, spacing * H, a, lda,
                   first == 0 ? 0 : 1, grad_w_ih, x.features);
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
  // One step (nothing carried) with h0: its product alone, not added onto a zero fill.
  if (carried > 0 || h0 == nullptr) {
    gemm<scalar_t>(true, false, H, H, carried, 1, dz_carried, H, y_prev, ld_y, 0, grad_w_hh, H);
  }
  if (h0 != nullptr) {
    gemm<scalar_t>(true, false, H, H, B, 1, dz_first, H, h0, H, carried > 0 ? 1 : 0, grad_w_hh,
                   H);
  }
}

}  // namespace fastrnn
