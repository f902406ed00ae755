"""fastrnn: nn.RNN and nn.RNNCell, same module, same weights, same numbers, faster.

import fastrnn
rnn = fastrnn.RNN(64, 128, num_layers=2, batch_first=True)   # as torch.nn.RNN
out, h_n = rnn(x)
"""

from fastrnn.backend import BackendUnavailableError, get_backend, set_backend, use_backend
from fastrnn.convert import convert
from fastrnn.functional import rnn
from fastrnn.modules import RNN, RNNCell

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
