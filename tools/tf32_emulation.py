"""An Elman RNN's forward error against exact (fp64) arithmetic when its products run in
TF32, with the operands rounded to nearest (cvt.rna.tf32.f32, kernels._tf32_high) or
truncated (what a tensor core does with fp32 it is handed), emulated on the CPU: the
recurrence's products alone, or the input projection's too.  Weights uniform in
+-1/sqrt(H) as nn.RNN's, tanh, h_t kept in fp32; h0 zero or standard normal (as
tests/test_triton.py's run_case).  Prints the largest error of h over the steps.

    python tools/tf32_emulation.py
"""

from __future__ import annotations

import torch


def truncated(x: torch.Tensor) -> torch.Tensor:  # fp32's last 13 mantissa bits dropped
    return (x.float().view(torch.int32) & ~0x1FFF).view(torch.float32).double()


def rounded(x: torch.Tensor) -> torch.Tensor:  # to nearest, ties away from zero
    return ((x.float().view(torch.int32) + 0x1000) & ~0x1FFF).view(torch.float32).double()


def exact(x: torch.Tensor) -> torch.Tensor:
    return x


def largest_error(steps, batch, inputs, hidden, recurrence, projection, random_h0, seed):
    gen = torch.Generator().manual_seed(seed)
    bound = hidden**-0.5

    def uniform(*shape):
        return (torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound

    w_ih, w_hh, bias = uniform(hidden, inputs), uniform(hidden, hidden), uniform(hidden)
    x = torch.randn(steps, batch, inputs, generator=gen, dtype=torch.float64)
    h0 = torch.randn(batch, hidden, generator=gen, dtype=torch.float64)
    want = got = h0 if random_h0 else torch.zeros(batch, hidden, dtype=torch.float64)
    error = 0.0
    for t in range(steps):
        want = torch.tanh(x[t] @ w_ih.T + bias + want @ w_hh.T)
        z = projection(x[t]) @ projection(w_ih).T + bias + recurrence(got) @ recurrence(w_hh).T
        got = torch.tanh(z).float().double()
        error = max(error, (got - want).abs().max().item())
    return error


def main() -> None:
    print("| T | B | I | H | h0 | input products | recurrence rounded | truncated |")
    print("|---|---|---|---|---|---|---|---|")
    for steps, batch, inputs, random_h0, projection in [
        (50, 64, 5, False, exact), (50, 64, 512, False, exact), (50, 64, 512, False, rounded),
        (100, 1, 5, False, exact), (100, 1, 5, True, exact), (50, 64, 5, True, exact),
    ]:  # fmt: skip
        for seed in (0, 1):
            errors = [
                largest_error(steps, batch, inputs, 1024, recurrence, projection, random_h0, seed)
                for recurrence in (rounded, truncated)
            ]
            print(f"| {steps} | {batch} | {inputs} | 1024 | {'normal' if random_h0 else 'zero'} "
                  f"| {projection.__name__} | {errors[0]:.2e} | {errors[1]:.2e} |")  # fmt: skip


if __name__ == "__main__":
    main()
