"""fastrnn: nn.RNN and nn.RNNCell, same module, same weights, same numbers, faster.

import fastrnn
rnn = fastrnn.RNN(64, 128, num_layers=2, batch_first=True)   # as torch.nn.RNN
out, h_n = rnn(x)
"""

import torch

from fastrnn.backend import BackendUnavailableError, get_backend, set_backend, use_backend
from fastrnn.convert import convert
from fastrnn.functional import rnn
from fastrnn.modules import RNN, RNNCell
from fastrnn.onnx_export import register_torchscript_symbolic

# Saved whole modules load under torch.load(..., weights_only=True), as nn.RNN's do once
# allowed; and torch.onnx.export(..., dynamo=False) knows the fused op.
torch.serialization.add_safe_globals([RNN, RNNCell])
register_torchscript_symbolic()

__all__ = [
    "RNN",
    "RNNCell",
    "BackendUnavailableError",
    "convert",
    "get_backend",
    "rnn",
    "set_backend",
    "use_backend",
]
__version__ = "0.1.0"
