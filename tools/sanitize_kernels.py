"""Small training steps on CUDA for compute-sanitizer, on the kernels that synchronise
threads beyond a step's own work: the cooperative tier (a grid barrier per step) and
the persistent backward that computes the weight gradients from the dz its threads
stored (a block barrier), on 8-row FMA programs, on 32-row tl.dot ones and on one row;
and one-row programs running the recurrence alone (threads summing whole columns, h
broadcast through shared memory each step).  The losses give the backward an expanded
gradient of h_n (strides 0) or of the output, and no gradient of h_n:

compute-sanitizer --tool racecheck python tools/sanitize_kernels.py
"""

import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from fastrnn.triton import launch

LOSSES = {
    "out^2 + h_n": lambda out, h_n: out.square().sum() + h_n.sum(),
    "out": lambda out, h_n: out.sum(),
}
CASES = [  # (tier, T, B, H, packed, loss)
    ("cooperative", 6, 20, 70, False, "out^2 + h_n"),
    ("cooperative", 6, 20, 70, False, "out"),
    ("persistent", 7, 5, 16, True, "out^2 + h_n"),
    ("persistent", 6, 20, 70, False, "out"),
    ("persistent", 40, 3, 100, False, "out^2 + h_n"),
    ("persistent", 6, 1, 100, False, "out"),
]

for tier, steps, batch, hidden, packed, loss in CASES:
    launch.FORCE_TIER = tier
    torch.manual_seed(0)
    rnn = fastrnn.RNN(8, hidden, num_layers=2, bidirectional=True, device="cuda")
    reference = torch.nn.RNN(8, hidden, num_layers=2, bidirectional=True, device="cuda")
    reference.load_state_dict(rnn.state_dict())
    x = torch.randn(steps, batch, 8, device="cuda")
    h0 = torch.randn(4, batch, hidden, device="cuda")
    lengths = torch.arange(steps, steps - batch, -1).clamp(min=1) if packed else None
    grads = []
    for module, backend in [(rnn, "triton"), (reference, "auto")]:
        inputs = pack_padded_sequence(x, lengths) if packed else x
        with fastrnn.use_backend(backend):
            out, h_n = module(inputs, h0)
        out = out.data if packed else out
        grads.append(torch.autograd.grad(LOSSES[loss](out, h_n), module.parameters()))
    torch.cuda.synchronize()
    error = max((a - b).abs().max().item() for a, b in zip(*grads, strict=True))
    print(f"{tier} T={steps} B={batch} H={hidden} packed={packed} loss {loss}: "
          f"max |grad - cuDNN's| {error:.2e}")  # fmt: skip
