"""LRP rules.

Notation: a layer with input ``x``, weight ``W``, bias ``b`` and output ``z = W x + b`` receives
the relevance ``R`` at its output and returns ``R_x`` for its input. ``x+ = max(x, 0)``,
``x- = min(x, 0)``, likewise ``W+``, ``W-``, ``b+``, ``b-``; ``W^T(.)`` is the layer's transposed
map. ``stab(d) = d + eps * sign(d)`` with ``sign(0) = +1``.

Rules for layers with parameters are :class:`~lrp_lightning.core.BasicHook` instances (a generic
autograd formulation that works for any module) which also supply a closed-form backward for
``nn.Linear`` and convolutions (see :mod:`lrp_lightning.closed_form`), used unless
:func:`lrp_lightning.core.fast_path` is switched off.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch

from lrp_lightning import _arguments, closed_form
from lrp_lightning.core import BasicHook, Hook, ParamMod, Stabilizer, _as_name_list, fast_path_enabled
from lrp_lightning.core import _identity as _identity_input
from lrp_lightning.core import _identity_param
from lrp_lightning.layer import Sum

StabilizerLike = Union[float, Callable[[torch.Tensor], torch.Tensor]]
ZeroParams = Union[None, str, Sequence[str]]


def zero_bias(zero_params: ZeroParams = None) -> list:
    """Return ``zero_params`` (None, a name or a list of names) as a list with ``'bias'`` appended.

    Parameters
    ----------
    zero_params : str or list of str, optional
        Names of parameters to be set to zero.

    Returns
    -------
    list of str
        The names, then ``'bias'``.
    """
    return _as_name_list(zero_params) + ["bias"]


class NoMod(ParamMod):
    """A :class:`~lrp_lightning.core.ParamMod` leaving the parameters as they are (``zero_params`` etc. still apply).

    Parameters
    ----------
    **kwargs
        ``param_keys``, ``zero_params``, ``require_params`` of :class:`~lrp_lightning.core.ParamMod`.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(_identity_param, **kwargs)


class ClampMod(ParamMod):
    """A :class:`~lrp_lightning.core.ParamMod` clamping the parameters: ``w -> clamp(w, min, max)``.

    Parameters
    ----------
    min, max : float, optional
        Bounds; None leaves that side open.
    **kwargs
        ``param_keys``, ``zero_params``, ``require_params`` of :class:`~lrp_lightning.core.ParamMod`.
    """

    def __init__(self, min: Optional[float] = None, max: Optional[float] = None, **kwargs) -> None:
        self.min = min
        self.max = max
        super().__init__(self._clamp, **kwargs)

    def _clamp(self, param: torch.Tensor, name: str) -> torch.Tensor:
        return param.clamp(min=self.min, max=self.max)


class GammaMod(ParamMod):
    """A :class:`~lrp_lightning.core.ParamMod` of the Gamma rule: ``w -> w + gamma * clamp(w, min, max)``.

    Parameters
    ----------
    gamma : float
        Weight of the clamped parameters added.
    min, max : float, optional
        Clamp bounds; None leaves that side open (``min=0``: ``w + gamma w+``).
    **kwargs
        ``param_keys``, ``zero_params``, ``require_params`` of :class:`~lrp_lightning.core.ParamMod`.
    """

    def __init__(self, gamma: float = 0.25, min: Optional[float] = None, max: Optional[float] = None, **kwargs) -> None:
        self.gamma = gamma
        self.min = min
        self.max = max
        super().__init__(self._boost, **kwargs)

    def _boost(self, param: torch.Tensor, name: str) -> torch.Tensor:
        return param + self.gamma * param.clamp(min=self.min, max=self.max)


def _positive_input(input: torch.Tensor) -> torch.Tensor:
    return input.clamp(min=0)


def _negative_input(input: torch.Tensor) -> torch.Tensor:
    return input.clamp(max=0)


def _ones(input: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(input)


class LinearRule(BasicHook):
    """A :class:`BasicHook` that computes ``nn.Linear`` and convolutions in closed form when it can."""

    saves_output = True
    splits_input_by_sign = False

    @property
    def _weight_caches(self) -> dict:
        """Derived weights per module (see :meth:`closed_form.LinearMap.memo`), dropped by :meth:`remove`."""
        return self.__dict__.setdefault("_weight_cache_by_module", {})

    def remove(self) -> None:
        """Drop the cached derived weights."""
        super().remove()
        self.__dict__.pop("_weight_cache_by_module", None)

    def probe(self, input: torch.Tensor) -> Union[None, bool, "closed_form.NegativeProbe"]:
        """For the closed form: start checking, without waiting for the device, whether the input
        has negative entries (rules whose closed form splits the input by sign), else ``False``."""
        if not fast_path_enabled():
            return None
        return closed_form.NegativeProbe(input) if self.splits_input_by_sign else False

    def relevance(self, call, input, output, grad_output):
        """Return the relevance of the input: closed form where supported, else via autograd."""
        module = call.module
        if (
            call.probe is not None
            and fast_path_enabled()
            and not call.extra_args
            and not call.kwargs
            and closed_form.supports(module, input)
            and "weight" not in _as_name_list(getattr(self, "zero_params", None))
        ):
            with torch.no_grad():
                layer = closed_form.LinearMap(module, self._weight_caches.setdefault(id(module), {}))
                result = self.closed_form(layer, input.detach(), output, grad_output, bool(call.probe))
            if result is not None:
                return result
        return self.propagate(module, input, output, grad_output, call.extra_args, call.kwargs)

    def closed_form(
        self,
        layer: "closed_form.LinearMap",
        input: torch.Tensor,
        output: Optional[torch.Tensor],
        grad_output: torch.Tensor,
        has_negatives: bool,
    ) -> Optional[torch.Tensor]:
        """Return the relevance of ``input`` in closed form, or None to use the generic path."""
        return None


class Epsilon(LinearRule):
    """LRP-epsilon: ``R_x = x * W^T(R / stab_eps(z))``; ``epsilon=0`` gives LRP-0.

    Parameters
    ----------
    epsilon : float or callable
        Stabilizer of the denominator ``z`` (a callable replaces ``stab`` wholesale).
    zero_params : str or list of str, optional
        Parameters (e.g. ``'bias'``) set to zero in the modified forward map.
    """

    def __init__(self, epsilon: StabilizerLike = 1e-6, zero_params: ZeroParams = None) -> None:
        self.epsilon = epsilon
        self.zero_params = zero_params
        super().__init__(
            stabilizer=Stabilizer.ensure(epsilon, "epsilon"),
            input_modifiers=[_identity_input],
            param_modifiers=[ParamMod(_identity_param, zero_params=zero_params)],
            output_modifiers=[_identity_input],
            gradient_mapper=lambda grad, outputs: [grad / self.stabilizer(outputs[0])],
            reducer=lambda inputs, gradients: inputs[0] * gradients[0],
        )

    def closed_form(self, layer, input, output, grad_output, has_negatives):
        return closed_form.epsilon(layer, input, output, grad_output, self.stabilizer, self.zero_params)

    def _repr_fields(self):
        return {"epsilon": self.epsilon, "zero_params": self.zero_params}


class ZPlus(LinearRule):
    """LRP-z+: ``z+ = W+ x+ + b+ + W- x-``, ``R_x = x+ * W+^T s + x- * W-^T s`` with ``s = R / stab(z+)``.

    Parameters
    ----------
    stabilizer : float or callable
        Stabilizer of the denominator.
    zero_params : str or list of str, optional
        Parameters set to zero in the modified forward maps.
    """

    splits_input_by_sign = True

    def __init__(self, stabilizer: StabilizerLike = 1e-6, zero_params: ZeroParams = None) -> None:
        self.zero_params = zero_params
        super().__init__(
            stabilizer=stabilizer,
            input_modifiers=[_positive_input, _negative_input],
            param_modifiers=[
                ClampMod(min=0.0, zero_params=zero_params),
                ClampMod(max=0.0, zero_params=zero_bias(zero_params)),
            ],
            output_modifiers=[_identity_input] * 2,
            gradient_mapper=lambda grad, outputs: [grad / self.stabilizer(outputs[0] + outputs[1])] * 2,
            reducer=lambda inputs, gradients: inputs[0] * gradients[0] + inputs[1] * gradients[1],
        )

    def closed_form(self, layer, input, output, grad_output, has_negatives):
        return closed_form.alpha_beta(layer, input, grad_output, has_negatives, 1.0, 0.0, self.stabilizer, self.zero_params)

    def _repr_fields(self):
        return {"stabilizer": self.stabilizer, "zero_params": self.zero_params}


class AlphaBeta(LinearRule):
    """LRP-alpha-beta with ``alpha - beta = 1``.

    ``z_p = W+ x+ + b+ + W- x-``, ``z_n = W- x+ + b- + W+ x-``,
    ``R_x = alpha (x+ * W+^T s_p + x- * W-^T s_p) - beta (x+ * W-^T s_n + x- * W+^T s_n)``
    with ``s_p = R / stab(z_p)``, ``s_n = R / stab(z_n)``.

    Parameters
    ----------
    alpha, beta : float
        Weights of the positive and negative contributions; ``alpha - beta = 1``, both >= 0.
    stabilizer : float or callable
        Stabilizer of the denominators.
    zero_params : str or list of str, optional
        Parameters set to zero in the modified forward maps.

    Raises
    ------
    ValueError
        If ``alpha - beta != 1`` or either is negative.
    """

    splits_input_by_sign = True

    def __init__(
        self, alpha: float = 2.0, beta: float = 1.0, stabilizer: StabilizerLike = 1e-6, zero_params: ZeroParams = None
    ) -> None:
        alpha, beta = _arguments.real_number("alpha", alpha), _arguments.real_number("beta", beta)
        if alpha < 0 or beta < 0:
            raise ValueError(f"AlphaBeta needs alpha >= 0 and beta >= 0, got alpha={alpha}, beta={beta}")
        if abs(alpha - beta - 1.0) > 1e-12:
            raise ValueError(f"AlphaBeta needs alpha - beta = 1, got alpha={alpha}, beta={beta} (e.g. alpha=2, beta=1)")
        self.alpha = alpha
        self.beta = beta
        self.zero_params = zero_params
        bias_zeroed = zero_bias(zero_params)
        super().__init__(
            stabilizer=stabilizer,
            input_modifiers=[_positive_input, _negative_input] * 2,
            param_modifiers=[
                ClampMod(min=0.0, zero_params=zero_params),
                ClampMod(max=0.0, zero_params=bias_zeroed),
                ClampMod(max=0.0, zero_params=zero_params),
                ClampMod(min=0.0, zero_params=bias_zeroed),
            ],
            output_modifiers=[_identity_input] * 4,
            gradient_mapper=lambda grad, outputs: (
                [grad / self.stabilizer(outputs[0] + outputs[1])] * 2
                + [grad / self.stabilizer(outputs[2] + outputs[3])] * 2
            ),
            reducer=lambda inputs, gradients: (
                self.alpha * (inputs[0] * gradients[0] + inputs[1] * gradients[1])
                - self.beta * (inputs[2] * gradients[2] + inputs[3] * gradients[3])
            ),
        )

    def closed_form(self, layer, input, output, grad_output, has_negatives):
        return closed_form.alpha_beta(layer, input, grad_output, has_negatives, self.alpha, self.beta, self.stabilizer, self.zero_params)

    def _repr_fields(self):
        return {"alpha": self.alpha, "beta": self.beta, "stabilizer": self.stabilizer, "zero_params": self.zero_params}


class Gamma(LinearRule):
    """LRP-gamma, generalized to signed inputs.

    With ``A = W + gamma W+`` and ``B = W + gamma W-`` (biases ``b + gamma b+``, ``b + gamma b-``):
    outputs with ``z > 0`` use ``z_p = A x+ + (b + gamma b+) + B x-``, outputs with ``z < 0`` use
    ``z_n = B x+ + (b + gamma b-) + A x-``, outputs with ``z = 0`` pass nothing (``z`` is the
    layer's actual output, also when ``zero_params`` zeroes the bias in ``z_p``, ``z_n``);
    ``s_p = R [z > 0] / stab(z_p)``, ``s_n = R [z < 0] / stab(z_n)`` and
    ``R_x = x+ * (A^T s_p + B^T s_n) + x- * (B^T s_p + A^T s_n)``.

    Parameters
    ----------
    gamma : float
        Weight of the positive (resp. negative) contributions added to the plain ones.
    stabilizer : float or callable
        Stabilizer of the denominators.
    zero_params : str or list of str, optional
        Parameters set to zero in the modified forward maps.
    """

    splits_input_by_sign = True

    def __init__(self, gamma: float = 0.25, stabilizer: StabilizerLike = 1e-6, zero_params: ZeroParams = None) -> None:
        self.gamma = gamma = _arguments.real_number("gamma", gamma, minimum=0.0)
        self.zero_params = zero_params
        bias_zeroed = zero_bias(zero_params)

        super().__init__(
            stabilizer=stabilizer,
            input_modifiers=[_positive_input, _negative_input, _positive_input, _negative_input, _identity_input],
            param_modifiers=[
                GammaMod(gamma, min=0.0, zero_params=zero_params),
                GammaMod(gamma, max=0.0, zero_params=bias_zeroed),
                GammaMod(gamma, max=0.0, zero_params=zero_params),
                GammaMod(gamma, min=0.0, zero_params=bias_zeroed),
                ParamMod(_identity_param),
            ],
            output_modifiers=[_identity_input] * 5,
            gradient_mapper=self._map_gradients,
            reducer=lambda inputs, gradients: sum(inputs[k] * gradients[k] for k in range(4)),
        )

    def _map_gradients(self, grad: torch.Tensor, outputs: list) -> list:
        positive = grad * (outputs[4] > 0) / self.stabilizer(outputs[0] + outputs[1])
        negative = grad * (outputs[4] < 0) / self.stabilizer(outputs[2] + outputs[3])
        return [positive, positive, negative, negative, torch.zeros_like(grad)]

    def closed_form(self, layer, input, output, grad_output, has_negatives):
        return closed_form.gamma(layer, input, output, grad_output, has_negatives, self.gamma, self.stabilizer, self.zero_params)

    def _repr_fields(self):
        return {"gamma": self.gamma, "stabilizer": self.stabilizer, "zero_params": self.zero_params}


def _broadcast_bound(bound: torch.Tensor, input: torch.Tensor, name: str) -> torch.Tensor:
    bound = torch.as_tensor(bound, dtype=input.dtype, device=input.device)
    try:
        return bound.expand_as(input) if bound.dim() <= input.dim() else bound.view_as(input)
    except RuntimeError:
        raise ValueError(
            f"ZBox bound {name!r} of shape {tuple(bound.shape)} does not broadcast to the input of shape "
            f"{tuple(input.shape)}; give a tensor of the input's shape or e.g. per-channel bounds of shape "
            f"(1, {input.shape[1] if input.dim() > 1 else 1}, 1, 1)"
        ) from None


class ZBox(LinearRule):
    """LRP-z^B for a first layer with bounded input ``low <= x <= high``.

    ``d = W x + b - (W+ l + b+) - (W- h + b-)``, ``s = R / stab(d)``,
    ``R_x = x * W^T s - l * W+^T s - h * W-^T s``.

    Parameters
    ----------
    low, high : torch.Tensor
        Lowest and highest input values; broadcast to the input's shape.
    stabilizer : float or callable
        Stabilizer of the denominator.
    zero_params : str or list of str, optional
        Parameters set to zero in the modified forward maps.

    Raises
    ------
    ValueError
        In the forward pass, if ``low`` or ``high`` does not broadcast to the input.
    """

    def __init__(
        self, low: torch.Tensor, high: torch.Tensor, stabilizer: StabilizerLike = 1e-6, zero_params: ZeroParams = None
    ) -> None:
        self.low = _arguments.tensor_like("low", low)
        self.high = _arguments.tensor_like("high", high)
        self.zero_params = zero_params
        super().__init__(
            stabilizer=stabilizer,
            input_modifiers=[
                _identity_input,
                lambda input: self._bound("low", input),
                lambda input: self._bound("high", input),
            ],
            param_modifiers=[
                ParamMod(_identity_param, zero_params=zero_params),
                ClampMod(min=0.0, zero_params=zero_params),
                ClampMod(max=0.0, zero_params=zero_params),
            ],
            output_modifiers=[_identity_input] * 3,
            gradient_mapper=lambda grad, outputs: [grad / self.stabilizer(outputs[0] - outputs[1] - outputs[2])] * 3,
            reducer=lambda inputs, gradients: inputs[0] * gradients[0] - inputs[1] * gradients[1] - inputs[2] * gradients[2],
        )

    def _bound(self, name: str, input: torch.Tensor) -> torch.Tensor:
        """``low`` or ``high`` on the input's device and dtype (converted once), broadcast to the input."""
        converted = self.__dict__.setdefault("_converted_bounds", {})
        key = (name, input.device, input.dtype)
        if key not in converted:
            converted[key] = getattr(self, name).to(device=input.device, dtype=input.dtype)
        return _broadcast_bound(converted[key], input, name)

    def remove(self) -> None:
        """Drop the cached derived weights and device copies of the bounds."""
        super().remove()
        self.__dict__.pop("_converted_bounds", None)

    def _forward_hook(self, module, args, kwargs, output):
        if self._applies(args):
            self._bound("low", args[0])
            self._bound("high", args[0])
        return super()._forward_hook(module, args, kwargs, output)

    def closed_form(self, layer, input, output, grad_output, has_negatives):
        low, high = self._bound("low", input), self._bound("high", input)
        return closed_form.zbox(layer, input, output, grad_output, low, high, self.stabilizer, self.zero_params)

    def _repr_fields(self):
        return {"low": f"tensor{tuple(self.low.shape)}", "high": f"tensor{tuple(self.high.shape)}", "stabilizer": self.stabilizer}


class WSquare(LinearRule):
    """LRP-w^2: ``R_x = (W^2)^T (R / stab(W^2 1 + b^2))``; the relevance ignores the input values.

    Parameters
    ----------
    stabilizer : float or callable
        Stabilizer of the denominator.
    zero_params : str or list of str, optional
        Parameters set to zero in the modified forward map.
    """

    saves_output = False

    def __init__(self, stabilizer: StabilizerLike = 1e-6, zero_params: ZeroParams = None) -> None:
        self.zero_params = zero_params
        super().__init__(
            stabilizer=stabilizer,
            input_modifiers=[_ones],
            param_modifiers=[ParamMod(lambda param, name: param**2, zero_params=zero_params)],
            output_modifiers=[_identity_input],
            gradient_mapper=lambda grad, outputs: [grad / self.stabilizer(outputs[0])],
            reducer=lambda inputs, gradients: gradients[0],
        )

    def closed_form(self, layer, input, output, grad_output, has_negatives):
        return closed_form.uniform_spread(layer, input, grad_output, self.stabilizer, self.zero_params, squared=True)

    def _repr_fields(self):
        return {"stabilizer": self.stabilizer, "zero_params": self.zero_params}


class Flat(LinearRule):
    """LRP-flat: WSquare with all weights 1 and no bias, ``R_x = 1^T (R / stab(1^T 1))`` (uniform spread).

    Parameters
    ----------
    stabilizer : float or callable
        Stabilizer of the denominator.
    zero_params : str or list of str, optional
        Accepted for a uniform signature; the bias is always zeroed.
    """

    saves_output = False

    def __init__(self, stabilizer: StabilizerLike = 1e-6, zero_params: ZeroParams = None) -> None:
        self.zero_params = zero_params
        super().__init__(
            stabilizer=stabilizer,
            input_modifiers=[_ones],
            param_modifiers=[ParamMod(lambda param, name: torch.ones_like(param), zero_params=zero_bias(zero_params))],
            output_modifiers=[_identity_input],
            gradient_mapper=lambda grad, outputs: [grad / self.stabilizer(outputs[0])],
            reducer=lambda inputs, gradients: gradients[0],
        )

    def closed_form(self, layer, input, output, grad_output, has_negatives):
        return closed_form.uniform_spread(layer, input, grad_output, self.stabilizer, self.zero_params, squared=False)

    def _repr_fields(self):
        return {"stabilizer": self.stabilizer}


class Norm(BasicHook):
    """Normalization rule for parameter-free linear layers (sum, average pooling).

    ``R_x = x * J^T (R / stab(z))`` where ``J`` is the layer's (linear) map; for a
    :class:`~lrp_lightning.layer.Sum` this is computed in closed form.

    Parameters
    ----------
    stabilizer : float or callable
        Stabilizer of the denominator.
    """

    saves_output = True

    def __init__(self, stabilizer: StabilizerLike = 1e-6) -> None:
        super().__init__(
            stabilizer=stabilizer,
            input_modifiers=[_identity_input],
            param_modifiers=[ParamMod(_identity_param)],
            output_modifiers=[_identity_input],
            gradient_mapper=lambda grad, outputs: [grad / self.stabilizer(outputs[0])],
            reducer=lambda inputs, gradients: inputs[0] * gradients[0],
        )

    def propagate(self, module, input, output, grad_output, args, kwargs):
        """Return the relevance of the input; a :class:`Sum` is split in proportion to its summands."""
        if fast_path_enabled() and isinstance(module, Sum) and not args and not kwargs:
            with torch.no_grad():
                input = input.detach()
                total = output if output is not None else module.forward(input)
                return (grad_output / self.stabilizer(total)).unsqueeze(module.dim).mul(input)
        return super().propagate(module, input, output, grad_output, args, kwargs)

    def _repr_fields(self):
        return {"stabilizer": self.stabilizer}


class Pass(Hook):
    """Pass the relevance through unchanged: ``R_x = R`` (activations, merged BatchNorm)."""

    saves_input = False

    def _forward_hook(self, module, args, kwargs, output):
        if args and output is args[0] and id(output) not in self._inplace_inputs:
            # an identity (e.g. a merged BatchNorm): its plain gradient already passes relevance through
            return None
        return super()._forward_hook(module, args, kwargs, output)

    def propagate(self, module, input, output, grad_output, args, kwargs):
        """Return ``grad_output`` unchanged."""
        return grad_output


class ReLUDeconvNet(Hook):
    """DeconvNet ReLU: ``grad_in = max(grad_out, 0)`` (Zeiler and Fergus, 2014), on any module it is put on."""

    saves_input = False

    def propagate(self, module, input, output, grad_output, args, kwargs):
        """Return ``grad_output.clamp(min=0)``."""
        return grad_output.clamp(min=0)


class ReLUGuidedBackprop(Hook):
    """Guided backprop (Springenberg et al., 2015): ``grad_in = J^T grad_out * [grad_out > 0]``.

    ``J^T grad_out`` is the module's own gradient; on a ReLU this is
    ``[x > 0] * grad_out * [grad_out > 0]``, computed directly. On any other module the module's
    true gradient is taken (recomputed from its input), as in zennit.
    """

    def propagate(self, module, input, output, grad_output, args, kwargs):
        """Return the module's gradient restricted to positive incoming gradients."""
        if type(module) is torch.nn.ReLU:
            return grad_output * (input > 0) * (grad_output > 0)
        return super().propagate(module, input, output, grad_output, args, kwargs)

    def backward(self, module, grad_input, grad_output):
        """Return ``grad_input`` where ``grad_output`` is positive, zero elsewhere."""
        return (grad_input[0] * (grad_output[0] > 0),)


class ReLUBetaSmooth(Hook):
    """Smooth ReLU gradient: ``grad_in = grad_out * sigmoid(beta * x)`` (Dombrowski et al., 2019).

    The module's own gradient is not used: on any module this gives the softplus gradient, as in zennit.

    Parameters
    ----------
    beta_smooth : float
        Sharpness of the softplus whose gradient replaces the ReLU's.
    """

    def __init__(self, beta_smooth: float = 10.0) -> None:
        super().__init__()
        self.beta_smooth = _arguments.real_number("beta_smooth", beta_smooth)

    def propagate(self, module, input, output, grad_output, args, kwargs):
        """Return ``grad_output * sigmoid(beta_smooth * input)``."""
        return grad_output * torch.sigmoid(self.beta_smooth * input)

    def _repr_fields(self):
        return {"beta_smooth": self.beta_smooth}

