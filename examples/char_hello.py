"""Character RNN: learn to map 'hello' to 'elloh' (hidden 8, Adam lr 0.1, 200 epochs).

    python examples/char_hello.py --backend fastrnn|nn|naive

The hidden state is carried from epoch to epoch and detached, as tutorials do.
"""

import torch
from common import Timer, make_rnn, parse_args
from torch import nn

args = parse_args(__doc__.splitlines()[0], epochs=200)
chars = sorted(set("hello"))  # e h l o
index = {c: i for i, c in enumerate(chars)}
x = nn.functional.one_hot(torch.tensor([index[c] for c in "hello"]), len(chars)).float()
x = x.unsqueeze(1)  # [T=5, B=1, I=4]
target = torch.tensor([index[c] for c in "elloh"])

rnn = make_rnn(args.backend, len(chars), 8)
head = nn.Linear(8, len(chars))
optimizer = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=0.1)
hidden = torch.zeros(1, 1, 8)
with Timer() as timer:
    for epoch in range(args.epochs):
        out, hidden = rnn(x, hidden)
        hidden = hidden.detach()
        loss = nn.functional.cross_entropy(head(out[:, 0]), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if epoch % 50 == 0 or epoch == args.epochs - 1:
            print(f"epoch {epoch:4d} loss {loss.item():.4f}")
prediction = "".join(chars[i] for i in head(out[:, 0]).argmax(1).tolist())
print(f"'hello' -> '{prediction}'  [{args.backend}: {timer.seconds * 1e3:.1f} ms]")
