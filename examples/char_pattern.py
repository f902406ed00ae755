"""Learn a repeating character pattern, one character per call (hidden 128).

    python examples/char_pattern.py --backend fastrnn|nn|naive

Each call runs a single step (T=1), as per-character training loops do; the loss of a
pass over the pattern is backpropagated through all its calls.
"""

import torch
from common import Timer, make_rnn, parse_args
from torch import nn

args = parse_args(__doc__.splitlines()[0], epochs=100)
pattern = "abcdefghijklmnopqrstuvwxy"  # 25 characters, then it repeats
vocab = sorted(set(pattern))
ids = torch.tensor([vocab.index(c) for c in pattern])
inputs = nn.functional.one_hot(ids, len(vocab)).float()  # [25, 25]
targets = ids.roll(-1)  # the next character

rnn = make_rnn(args.backend, len(vocab), 128)
head = nn.Linear(128, len(vocab))
optimizer = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=0.01)
hidden = torch.zeros(1, 1, 128)
with Timer() as timer:
    for epoch in range(args.epochs):
        loss = 0.0
        for x_t, y_t in zip(inputs, targets, strict=True):
            out, hidden = rnn(x_t.view(1, 1, -1), hidden)  # one character per call
            loss = loss + nn.functional.cross_entropy(head(out[0]), y_t.view(1))
        loss = loss / len(pattern)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        hidden = hidden.detach()
        if epoch % 25 == 0 or epoch == args.epochs - 1:
            print(f"epoch {epoch:4d} loss {loss.item():.4f}")
print(f"[{args.backend}: {timer.seconds * 1e3:.1f} ms]")
