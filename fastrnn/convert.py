"""fastrnn.convert: swap every nn.RNN / nn.RNNCell inside an existing model for fastrnn's."""

from __future__ import annotations

import warnings

from torch import nn

from fastrnn.modules import RNN, RNNCell

# Per-module state that lives outside parameters and must survive the swap.
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


def _why_not(module: nn.Module) -> str | None:
    """The reason a module that is an nn.RNN / nn.RNNCell cannot be swapped, else None."""
    kind = "nn.RNN" if isinstance(module, nn.RNN) else "nn.RNNCell"
    if type(module) not in (nn.RNN, nn.RNNCell):
        return (
            f"{type(module).__name__} subclasses {kind} and may change its forward "
            "(or is parametrized); left as it is"
        )
    params = module._flat_weights if isinstance(module, nn.RNN) else list(module.parameters())
    if any(not isinstance(p, nn.Parameter) for p in params):
        return f"this {kind} holds weights that are not nn.Parameters; left as it is"
    return None


def _swap(module: nn.Module) -> nn.Module:
    """A fastrnn module sharing module's Parameter objects (so existing optimisers still
    update them), with its training mode and hooks.  Built on the meta device, so the
    swap allocates nothing and draws nothing from the random generator."""
    if isinstance(module, nn.RNN):
        new = RNN(
            module.input_size, module.hidden_size, module.num_layers, module.nonlinearity,
            bias=module.bias, batch_first=module.batch_first, dropout=module.dropout,
            bidirectional=module.bidirectional, device="meta",
        )  # fmt: skip
        for name in module._flat_weights_names:
            setattr(new, name, getattr(module, name))
    else:
        new = RNNCell(
            module.input_size, module.hidden_size, bias=module.bias,
            nonlinearity=module.nonlinearity, device="meta",
        )  # fmt: skip
        for name, param in module.named_parameters(recurse=False):
            setattr(new, name, param)
    new.train(module.training)
    for attr in _HOOK_DICTS:
        if hasattr(module, attr):
            setattr(new, attr, getattr(module, attr))
    return new


def convert(model: nn.Module) -> nn.Module:
    """Replace every ``nn.RNN`` and ``nn.RNNCell`` inside ``model``, in place and
    recursively, by ``fastrnn.RNN`` / ``fastrnn.RNNCell`` holding the same parameters
    (same objects: weights, device, dtype, optimiser state all carry over) and the same
    ``training`` mode and hooks.  Returns ``model`` (or, when ``model`` itself is an
    ``nn.RNN`` / ``nn.RNNCell``, its replacement).  Modules that cannot be converted
    (subclasses, parametrized modules, non-Parameter weights) stay as they are, with a
    warning saying why.

    The swapped modules are not instances of ``nn.RNN`` / ``nn.RNNCell`` (they subclass
    ``nn.RNNBase`` / ``nn.RNNCellBase``, since torch.compile refuses to trace ``nn.RNN``
    instances): code that checks ``isinstance(m, nn.RNN)`` should check
    ``isinstance(m, nn.RNNBase)`` instead, which both pass.
    """
    if isinstance(model, (nn.RNN, nn.RNNCell)):
        reason = _why_not(model)
        if reason is None:
            return _swap(model)
        warnings.warn(f"fastrnn.convert: {reason}", stacklevel=2)
        return model
    for name, child in list(model.named_children()):
        if isinstance(child, (nn.RNN, nn.RNNCell)):
            reason = _why_not(child)
            if reason is None:
                setattr(model, name, _swap(child))
            else:
                warnings.warn(f"fastrnn.convert: {name}: {reason}", stacklevel=2)
        else:
            convert(child)
    return model


__all__ = ["convert"]
