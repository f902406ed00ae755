"""fastrnn.RNN and fastrnn.RNNCell: nn.RNN / nn.RNNCell with fused kernels underneath.

They subclass nn.RNNBase / nn.RNNCellBase, so the constructor, its argument checks,
parameter names, shapes, initialisation, state_dict and repr are nn.RNN's own; only
forward differs.  (Not nn.RNN itself: torch.compile refuses to trace nn.RNN instances,
and fastrnn.RNN is meant to compile with fullgraph=True.)
"""

from typing import overload

import torch
from torch import Tensor, nn
from torch.fx import Proxy
from torch.fx.proxy import TraceError
from torch.jit import is_scripting
from torch.nn.utils.rnn import PackedSequence

from fastrnn.functional import autocasting, exporting_to_onnx, rnn, rnn_cell
from fastrnn.onnx_export import PACKED_INPUT_ERROR
from fastrnn.ops import require_extension


def module_weights(module: nn.Module, names) -> list[Tensor]:
    """The weights named, as nn.RNN reads them: from _parameters (where functional_call
    swaps them too), else by attribute, where a parametrization (weight_norm,
    spectral_norm) or pruning computes the tensor under that name."""
    params = module._parameters
    try:
        return [params[name] for name in names]
    except KeyError:
        return [getattr(module, name) for name in names]


def traced_call(module: nn.Module, input: Proxy, hx) -> Proxy:
    """Under torch.fx.symbolic_trace: one call_module node for the module, as FX records
    for nn.RNN and nn.RNNCell (leaves by their torch.nn name), so that the traced model
    calls the module itself."""
    tracer = input.tracer
    path = tracer.path_of_module(module)
    if not path:  # the traced root itself, which FX cannot record as a call of itself
        raise TraceError(
            f"fastrnn.{type(module).__name__} cannot be the root of torch.fx.symbolic_trace "
            "(nn.RNN cannot either); trace a module that holds it, where it is one "
            "call_module node"
        )
    args = (input,) if hx is None else (input, hx)
    return tracer.create_proxy("call_module", path, args, {})


CELL_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class RNN(nn.RNNBase):
    """Drop-in for :class:`torch.nn.RNN`: same arguments, parameters, shapes and errors."""

    def __init__(self, *args, **kwargs):
        # nn.RNN.__init__, which cannot be called on a non-nn.RNN.
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif self.nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(
                f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'."
            )
        super().__init__(mode, *args, **kwargs)

    def flatten_parameters(self) -> None:
        """No-op: the fused kernels read the parameters where they are."""

    def __prepare_scriptable__(self):
        require_extension()  # scripted, it runs the fused ops only
        return self

    # Overloads as nn.RNN declares them, for TorchScript (a padded and a packed forward).
    @overload
    @torch._jit_internal._overload_method
    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]: ...

    @overload
    @torch._jit_internal._overload_method
    def forward(
        self, input: PackedSequence, hx: Tensor | None = None
    ) -> tuple[PackedSequence, Tensor]: ...

    def forward(self, input, hx=None):
        # is_scripting() branches are settled when TorchScript compiles this (it skips
        # their Python-only side), and isinstance(orig_input, PackedSequence) per
        # overload, so that is asked where it is needed.
        if not is_scripting():
            if isinstance(input, Proxy):
                return traced_call(self, input, hx)
        num_directions = 2 if self.bidirectional else 1
        orig_input = input
        is_batched = True
        batch_dim = 0 if self.batch_first else 1
        if isinstance(orig_input, PackedSequence):
            if not is_scripting():  # TorchScript cannot read the message's global
                if exporting_to_onnx():  # before int(batch_sizes[0]), which export cannot trace
                    raise RuntimeError(PACKED_INPUT_ERROR)
            input, batch_sizes, sorted_indices, unsorted_indices = input
            max_batch_size = int(batch_sizes[0])
        else:
            batch_sizes = None
            sorted_indices = None
            unsorted_indices = None
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"RNN: Expected input to be 2D or 3D, got {input.dim()}D tensor instead"
                )
            is_batched = input.dim() == 3
            if not is_batched:
                input = input.unsqueeze(batch_dim)
                if hx is not None:
                    if hx.dim() != 2:
                        raise RuntimeError(
                            "For unbatched 2-D input, hx should also be 2-D but got "
                            f"{hx.dim()}-D tensor"
                        )
                    hx = hx.unsqueeze(1)
            elif hx is not None and hx.dim() != 3:
                raise RuntimeError(
                    f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor"
                )
            max_batch_size = input.size(0) if self.batch_first else input.size(1)
        if hx is not None and sorted_indices is not None:
            hx = self.permute_hidden(hx, sorted_indices)
        if is_scripting():
            weights = self._flat_weights
            # nn.RNN's own checks, on every call (check_forward_args less its zero hx); a
            # dtype mismatch the op's own check reports (TorchScript prints a dtype as a
            # number).
            self.check_input(input, batch_sizes)
            if hx is not None:
                self.check_hidden_size(hx, self.get_expected_hidden_size(input, batch_sizes))
        else:
            weights = module_weights(self, self._flat_weights_names)
            hidden_shape = (self.num_layers * num_directions, max_batch_size, self.hidden_size)
            # nn.RNN's own checks (and messages) run whenever the cheap test sees a
            # mismatch; at tutorial sizes running them on every call was ~10% of the call.
            if (
                input.dtype != weights[0].dtype
                or input.size(-1) != self.input_size
                or input.dim() != (2 if batch_sizes is not None else 3)
                or (hx is not None and hx.shape != hidden_shape)
            ):
                self.check_forward_args(
                    input, input.new_zeros(hidden_shape) if hx is None else hx, batch_sizes
                )
            if hx is not None and hx.dtype != input.dtype and not autocasting(input.device.type):
                raise RuntimeError(
                    f"RNN: hx dtype ({hx.dtype}) does not match input dtype ({input.dtype}); "
                    f"convert it with hx.to({input.dtype})"
                )
        if batch_sizes is None and self.batch_first:
            input = input.transpose(0, 1)
        if batch_sizes is None and input.size(0) == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")

        output, hidden = rnn(
            input,
            hx,
            weights,
            batch_sizes,
            self.num_layers,
            self.bidirectional,
            self.mode == "RNN_RELU",
            self.dropout,
            self.training,
        )
        if isinstance(orig_input, PackedSequence):
            packed = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
            return packed, self.permute_hidden(hidden, unsorted_indices)
        if self.batch_first:
            output = output.transpose(0, 1)
        if not is_batched:
            output = output.squeeze(batch_dim)
            hidden = hidden.squeeze(1)
        return output, hidden


class RNNCell(nn.RNNCellBase):
    """Drop-in for :class:`torch.nn.RNNCell`: one step of the same fused kernels."""

    __constants__ = ["input_size", "hidden_size", "bias", "nonlinearity"]
    nonlinearity: str

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks=1, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def __prepare_scriptable__(self):
        require_extension()  # scripted, it runs the fused ops only
        return self

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        # Kept lean: at tutorial sizes this Python is most of a cell call's cost.
        if not is_scripting():  # settled when TorchScript compiles this
            if isinstance(input, Proxy):
                return traced_call(self, input, hx)
        if input.dim() not in (1, 2):
            raise ValueError(f"RNNCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None and hx.dim() not in (1, 2):
            raise ValueError(f"RNNCell: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
        batch, input_size = input.shape
        if hx is None:
            hx = input.new_zeros(batch, self.hidden_size)
        elif not is_batched:
            hx = hx.unsqueeze(0)
        # ATen's checks for nn.RNNCell, with its messages.
        if input_size != self.input_size:
            raise RuntimeError(
                f"input has inconsistent input_size: got {input_size} expected {self.input_size}"
            )
        hx_batch, hx_size = hx.size(0), hx.size(1)
        if batch != hx_batch:
            raise RuntimeError(
                f"Input batch size {batch} doesn't match hidden0 batch size {hx_batch}"
            )
        if hx_size != self.hidden_size:
            raise RuntimeError(
                f"hidden0 has inconsistent hidden_size: got {hx_size}, expected {self.hidden_size}"
            )
        relu = self.nonlinearity == "relu"
        if not relu and self.nonlinearity != "tanh":
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        if is_scripting():  # a dtype mismatch the op's own check reports, as in RNN
            weights = [self.weight_ih, self.weight_hh]
            if self.bias_ih is not None and self.bias_hh is not None:
                weights += [self.bias_ih, self.bias_hh]
        else:
            weights = module_weights(self, CELL_WEIGHTS if self.bias else CELL_WEIGHTS[:2])
            dtype = weights[0].dtype
            if (input.dtype != dtype or hx.dtype != dtype) and not autocasting(input.device.type):
                raise RuntimeError(
                    f"RNNCell: input dtype ({input.dtype}) and hx dtype ({hx.dtype}) must "
                    f"match the weight dtype ({dtype})"
                )
        h = rnn_cell(input, hx, weights, relu)
        return h if is_batched else h.squeeze(0)
