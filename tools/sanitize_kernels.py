"""Small training steps on CUDA for compute-sanitizer, on the kernels that synchronise
threads beyond a step's own work: the cooperative tier (a grid barrier per step; W_hh
on chip, and streamed, where fp32 under the TF32 flag reads the low parts of W_hh that
every program wrote into a workspace before the first barrier; and with the state
exchanged as tagged words instead, whose reads wait for the tags), and
the persistent backward that computes the weight gradients from the dz its threads
stored (a block barrier), on 8-row FMA programs, on 32-row tl.dot ones and on one row;
and one-row programs running the recurrence alone (threads summing whole columns, h
broadcast through shared memory each step; at H=256 too, launch.one_row_plan).  The
losses give the backward an expanded gradient of h_n (strides 0) or of the output, and
no gradient of h_n; half the cases run batch_first, where the kernels read the input
(or its projections) and a dense gradient of the output at their batch-major strides:

compute-sanitizer --tool racecheck python tools/sanitize_kernels.py

(tests/test_triton.py runs the same cases through Triton's interpreter on CPU tensors.)
"""

import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from fastrnn.triton import launch

LOSSES = {
    "out^2 + h_n": lambda out, h_n: out.square().sum() + h_n.sum(),
    "out": lambda out, h_n: out.sum(),
    # A weighting laid out as a batch_first output: the output's gradient is batch-major.
    "w * out + h_n": lambda out, h_n: (
        (torch.rand(out.shape, device=out.device) * out).sum() + h_n.sum()
    ),
}
CASES = [  # (variant of the plan: launch.variant_settings, T, B, H, packed, batch_first, loss)
    # First, as the newest (a tool's time limit may stop the cases): one row past FMA
    # rows' bound.
    ("fastrnn", 40, 3, 256, False, True, "w * out + h_n"),
    ("cooperative", 6, 20, 70, False, True, "w * out + h_n"),
    ("cooperative", 6, 20, 70, False, False, "out"),
    ("cooperative-streamed", 6, 20, 70, False, False, "out^2 + h_n"),
    ("cooperative-tagged", 6, 20, 70, True, False, "out^2 + h_n"),
    ("persistent", 7, 5, 16, True, False, "out^2 + h_n"),
    ("persistent", 6, 20, 70, False, True, "out"),
    ("persistent", 40, 3, 100, False, True, "w * out + h_n"),
    ("persistent", 6, 1, 100, False, False, "out"),
]


def run_cases(device: str = "cuda", backend: str = "triton") -> list[float]:
    """Each case's largest difference between fastrnn's parameter gradients (on `backend`)
    and nn.RNN's, printed as it runs.  Leaves launch's settings at the last case's."""
    errors = []
    for tier, steps, batch, hidden, packed, batch_first, loss in CASES:
        for setting, value in launch.variant_settings(tier).items():
            setattr(launch, setting, value)
        torch.manual_seed(0)
        options = dict(num_layers=2, bidirectional=True, batch_first=batch_first, device=device)
        rnn = fastrnn.RNN(8, hidden, **options)
        reference = torch.nn.RNN(8, hidden, **options)
        reference.load_state_dict(rnn.state_dict())
        x = torch.randn(batch, steps, 8, device=device)
        x = x if batch_first else x.transpose(0, 1).contiguous()
        h0 = torch.randn(4, batch, hidden, device=device)
        lengths = torch.arange(steps, steps - batch, -1).clamp(min=1) if packed else None
        grads = []
        for module in (rnn, reference):
            inputs = pack_padded_sequence(x, lengths) if packed else x
            with fastrnn.use_backend(backend):  # nn.RNN ignores it
                out, h_n = module(inputs, h0)
            out = out.data if packed else out
            torch.manual_seed(1)  # the same weighting w for both
            grads.append(torch.autograd.grad(LOSSES[loss](out, h_n), module.parameters()))
        error = max((a - b).abs().max().item() for a, b in zip(*grads, strict=True))
        errors.append(error)
        print(f"{tier} T={steps} B={batch} H={hidden} packed={packed} batch_first="
              f"{batch_first} loss {loss}: max |grad - nn.RNN's| {error:.2e}")  # fmt: skip
    return errors


if __name__ == "__main__":
    run_cases()
