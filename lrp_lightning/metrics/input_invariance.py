"""Input invariance (Kindermans et al. 2019): the explanation ignores a constant shift the model absorbs."""
import copy
from typing import Any, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lrp_lightning._arguments import boolean, real_number
from lrp_lightning.explainers import build_explainer, check_spec
from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import check_inputs, check_target
from lrp_lightning.metrics._quantus_steps import quantus_attributions
from lrp_lightning.transformer.tokens import is_token_ids

FIRST_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _ShiftPadded(nn.Module):
    """Pads with the shift value before the (now unpadded) first convolution, so that the border sees
    the shifted zeros the original padding gave."""

    def __init__(self, conv: nn.Module, shift: float) -> None:
        super().__init__()
        self.padding = [side for size in reversed(conv.padding) for side in (size, size)]
        self.shift = shift
        conv.padding = (0,) * len(conv.padding)
        self.conv = conv

    def forward(self, inputs: Tensor) -> Tensor:
        return self.conv(F.pad(inputs, self.padding, value=self.shift))


def shift_absorbing_copy(model: nn.Module, shift: float) -> nn.Module:
    """A deep copy of ``model`` that maps ``x + shift`` to what ``model`` maps ``x`` to.

    The first ``Linear`` / ``Conv`` layer (in ``modules()`` order) takes the shift into its bias,
    :math:`b' = b - \\mathrm{shift} \\sum W`; a padded convolution pads with ``shift`` instead of 0
    (Kindermans et al. 2019's construction). ``model`` itself is not touched.
    """
    shifted = copy.deepcopy(model)
    named = [(name, module) for name, module in shifted.named_modules() if isinstance(module, FIRST_LAYERS)]
    if not named:
        raise ValueError("InputInvariance needs a model whose first layer is a Linear or Conv layer to absorb the shift")
    name, first = named[0]
    is_convolution = isinstance(first, nn.modules.conv._ConvNd)
    if is_convolution and first.padding_mode != "zeros":
        raise ValueError(f"the first convolution pads with {first.padding_mode!r}; only zero padding can absorb a shift")
    with torch.no_grad():
        weight_sum = first.weight.sum(dim=tuple(range(1, first.weight.ndim)))
        bias = first.bias if first.bias is not None else torch.zeros_like(weight_sum)
        first.bias = nn.Parameter(bias - shift * weight_sum)
    if is_convolution and first.padding != "valid" and first.padding != (0,) * len(first.kernel_size):
        if isinstance(first.padding, str):
            raise ValueError("the first convolution's padding must be numbers, not 'same'/'valid', to absorb a shift")
        parent_name, _, child = name.rpartition(".")
        parent = shifted.get_submodule(parent_name) if parent_name else shifted
        replacement = _ShiftPadded(first, shift)
        if name:
            setattr(parent, child, replacement)
        else:
            shifted = replacement
    return shifted


class InputInvariance(SampleMeanMetric):
    """Fraction of samples whose explanation is unchanged by a constant input shift the model absorbs
    (Kindermans et al. 2019).

    The model :math:`f_2(x) = f(x - s)` is built from ``model`` by :func:`shift_absorbing_copy`
    (``s`` = ``input_shift``); the ``explainer`` explains :math:`f_2` at :math:`x + s` for the
    target, and a sample counts as invariant when that explanation equals the given attributions
    of f at x within ``rtol`` / ``atol`` (after Quantus' ``abs`` / ``normalise``). Gradients are
    invariant; Gradient x Input and LRP-epsilon are not. The user's model is never changed.

    Quantus 0.6.0's ``InputInvariance`` leaves the first value of every sample unshifted, raises for
    a model whose first layer is ``Linear``, and tests exact equality; this class follows the paper.

    Parameters
    ----------
    explainer : str or Composite
        A registry name (``"gradient"``, ``"epsilon_plus"``, ...) or a Composite, built as
        ``AttributionCallback`` builds them (bounds of box rules from the shifted inputs).
    input_shift : float
        The constant added to every input value (Quantus' default -1).
    abs, normalise : bool
        Quantus' attribution options, applied to both explanations.
    rtol, atol : float
        Tolerances of the comparison.
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    higher_is_better = True

    def __init__(
        self,
        explainer: Union[str, Any] = "gradient",
        input_shift: float = -1.0,
        abs: bool = False,
        normalise: bool = False,
        rtol: float = 1e-5,
        atol: float = 1e-8,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(explainer, (list, tuple, dict)):
            raise ValueError(f"InputInvariance takes one explainer, got {len(explainer)}")
        check_spec(explainer)
        self.explainer = explainer
        self.explainer_name = explainer if isinstance(explainer, str) else type(explainer).__name__
        self.input_shift = real_number("input_shift", input_shift)
        self.abs = boolean("abs", abs)
        self.normalise = boolean("normalise", normalise)
        self.rtol = real_number("rtol", rtol, minimum=0.0)
        self.atol = real_number("atol", atol, minimum=0.0)

    def update(self, model: nn.Module, inputs: Tensor, attributions: Tensor, target: Tensor) -> None:
        """Explain the shift-absorbing copy at the shifted inputs and compare with ``attributions``.

        Parameters
        ----------
        model : nn.Module
            The explained model (deep-copied; the copy absorbs the shift).
        inputs : Tensor
            Floating inputs (N, C, H, W) or (N, D).
        attributions : Tensor
            The explainer's attributions of ``model`` at ``inputs``, the inputs' shape.
        target : Tensor
            Class indices (N,).
        """
        if is_token_ids(inputs):
            raise ValueError("InputInvariance shifts input values; token ids cannot be shifted")
        inputs = check_inputs(inputs)
        self._follow_device(inputs)
        target = check_target(target, inputs.shape[0], inputs.device)
        if not isinstance(attributions, Tensor) or attributions.shape != inputs.shape:
            shape = tuple(attributions.shape) if isinstance(attributions, Tensor) else type(attributions).__name__
            raise ValueError(f"attributions must have the inputs' shape {tuple(inputs.shape)}, got {shape}")
        shifted_model = shift_absorbing_copy(model, self.input_shift)
        shifted_inputs = inputs + self.input_shift
        explainer = build_explainer(self.explainer_name, self.explainer, shifted_model, shifted_inputs)
        with torch.enable_grad(), explainer.attributor(shifted_model) as attributor:
            _, shifted_relevance = attributor(shifted_inputs, target)
        given = quantus_attributions(attributions.to(inputs.device), self.abs, self.normalise).reshape(inputs.shape[0], -1)
        shifted = quantus_attributions(shifted_relevance.detach(), self.abs, self.normalise).reshape(inputs.shape[0], -1)
        invariant = ((given - shifted).abs() <= self.atol + self.rtol * shifted.abs()).all(dim=1)
        self._accumulate(invariant.double(), given, shifted)
