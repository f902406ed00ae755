"""A small cooperative-tier forward and backward on CUDA, for compute-sanitizer:

compute-sanitizer --tool racecheck python tools/sanitize_cooperative.py
"""

import torch

import fastrnn
from fastrnn.triton import launch

launch.FORCE_TIER = "cooperative"
torch.manual_seed(0)
rnn = fastrnn.RNN(8, 70, num_layers=2, bidirectional=True, device="cuda")
x = torch.randn(6, 20, 8, device="cuda", requires_grad=True)
h0 = torch.randn(4, 20, 70, device="cuda", requires_grad=True)
with fastrnn.use_backend("triton"):
    out, h_n = rnn(x, h0)
    (out.square().sum() + h_n.sum()).backward()
reference = torch.nn.RNN(8, 70, num_layers=2, bidirectional=True, device="cuda")
reference.load_state_dict(rnn.state_dict())
out_ref, _ = reference(x, h0)
torch.cuda.synchronize()
print("max |out - cuDNN|:", (out - out_ref).abs().max().item())
