"""Two-layer sequence regression: predict the running mean of the first feature
(seq 10, input 5, hidden 20, batch 32).

    python examples/seq_regression.py --backend fastrnn|nn|naive
"""

import torch
from common import Timer, make_rnn, parse_args
from torch import nn

args = parse_args(__doc__.splitlines()[0], epochs=300)
rnn = make_rnn(args.backend, 5, 20, num_layers=2, batch_first=True)
head = nn.Linear(20, 1)
optimizer = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=0.01)
with Timer() as timer:
    for epoch in range(args.epochs):
        x = torch.randn(32, 10, 5)  # [B, T, I]
        target = x[:, :, :1].cumsum(1) / torch.arange(1, 11).view(1, 10, 1)
        out, _ = rnn(x)
        loss = nn.functional.mse_loss(head(out), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if epoch % 100 == 0 or epoch == args.epochs - 1:
            print(f"epoch {epoch:4d} loss {loss.item():.4f}")
print(f"[{args.backend}: {timer.seconds * 1e3:.1f} ms]")
