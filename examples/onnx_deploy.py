"""Train a small fastrnn sequence classifier, export it to ONNX (one fused RNN node per
layer) and run it in ONNX Runtime: the deployed model gives the trained model's numbers.

    python examples/onnx_deploy.py [--epochs N] [--out model.onnx]

Needs onnx, onnxscript and onnxruntime (pip install onnx onnxscript onnxruntime).
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from common import Timer
from torch import nn

import fastrnn

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=200)
parser.add_argument("--out", default=None, help="where to write the .onnx file")
args = parser.parse_args()
torch.manual_seed(0)


class SignOfSum(nn.Module):
    """Is the sum of a sequence positive?  A 2-layer bidirectional RNN and a linear head."""

    def __init__(self):
        super().__init__()
        self.rnn = fastrnn.RNN(1, 16, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(32, 2)

    def forward(self, x):  # [B, T, 1] -> [B, 2] logits
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


model = SignOfSum()
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
with Timer() as timer:
    for epoch in range(args.epochs):
        x = torch.randn(64, 12, 1)
        target = (x.sum(dim=(1, 2)) > 0).long()
        loss = nn.functional.cross_entropy(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if epoch % 50 == 0 or epoch == args.epochs - 1:
            print(f"epoch {epoch:4d} loss {loss.item():.4f}")
print(f"[fastrnn: {timer.seconds * 1e3:.1f} ms]")

model.eval()
x = torch.randn(8, 12, 1)
out_path = Path(args.out) if args.out else Path(tempfile.mkdtemp()) / "sign_of_sum.onnx"
onnx_program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
onnx_program.save(str(out_path))
nodes = [node.op_type for node in onnx.load(str(out_path)).graph.node]
print(f"exported to {out_path}: {nodes.count('RNN')} RNN nodes, {len(nodes)} nodes in all")

session = onnxruntime.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])
(deployed,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
with torch.no_grad():
    eager = model(x).numpy()
print(f"ONNX Runtime vs PyTorch: max |difference| {np.abs(deployed - eager).max():.2e}")
accuracy = (deployed.argmax(1) == (x.sum(dim=(1, 2)) > 0).long().numpy()).mean()
print(f"ONNX Runtime accuracy on 8 new sequences: {accuracy:.2f}")
