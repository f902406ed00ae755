"""An RNNCell loop, as in the nn.RNNCell docs (T=3, batch 5, input 4, hidden 2), trained
to output the sign of the sum of its inputs so far.

    python examples/cell_loop.py --backend fastrnn|nn|naive
"""

import torch
from common import Timer, parse_args
from torch import nn

import fastrnn

args = parse_args(__doc__.splitlines()[0], epochs=300)
if args.backend == "fastrnn":
    cell = fastrnn.RNNCell(4, 2)
elif args.backend == "nn":
    cell = nn.RNNCell(4, 2)
else:  # the cell written out by hand
    w_ih = nn.Parameter(torch.randn(2, 4) * 0.5)
    w_hh = nn.Parameter(torch.randn(2, 2) * 0.5)
    bias = nn.Parameter(torch.zeros(2))

    def cell(x_t, h):
        return torch.tanh(x_t @ w_ih.T + h @ w_hh.T + bias)

    cell.parameters = lambda: [w_ih, w_hh, bias]
head = nn.Linear(2, 1)
optimizer = torch.optim.Adam([*cell.parameters(), *head.parameters()], lr=0.05)
with Timer() as timer:
    for epoch in range(args.epochs):
        x = torch.randn(3, 5, 4)  # [T, B, I]
        target = torch.sign(x.sum(2).cumsum(0)).unsqueeze(2)
        h = torch.zeros(5, 2)
        outputs = []
        for x_t in x:
            h = cell(x_t, h)
            outputs.append(head(h))
        loss = nn.functional.mse_loss(torch.stack(outputs), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if epoch % 100 == 0 or epoch == args.epochs - 1:
            print(f"epoch {epoch:4d} loss {loss.item():.4f}")
print(f"[{args.backend}: {timer.seconds * 1e3:.1f} ms]")
