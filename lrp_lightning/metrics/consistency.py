"""Consistency (Dasgupta et al. 2022): how often inputs given the same (discretised) explanation get the same prediction."""
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

from lrp_lightning._arguments import boolean
from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import (
    check_attention_mask,
    check_inputs,
    check_same_batch,
    flat_attributions,
    optional_batch_size,
)
from lrp_lightning.metrics._model import Model, evaluation_mode
from lrp_lightning.metrics._perturbation import chunk_bounds
from lrp_lightning.metrics._quantus_steps import quantus_attributions
from lrp_lightning.transformer.tokens import class_scores

Discretise = Union[str, Callable[[Tensor], Tensor]]
DISCRETISE_FUNCS = ("top_n_sign", "sign", "rank", "floating_points")
# Quantus 0.6.0's defaults: top_n_sign keeps the first 5 values, floating_points rounds to 2 decimals
TOP_N = 5
DECIMALS = 2
# Quantus 0.6.0 divides the count of agreeing neighbours by their number plus this
DIVISOR_EPS = 1e-9


def discretised(values: Tensor, discretise_func: Discretise) -> Tensor:
    """One key row per sample (N, K) from attributions ``values`` (N, F); equal rows mean the same explanation.

    ``"top_n_sign"``: the signs of the first five values (flattened order; Quantus 0.6.0's
    ``top_n_sign`` with its default ``n=5``); ``"sign"``: the signs of all values; ``"rank"``: the
    order of the values, largest first; ``"floating_points"``: the values rounded to two decimals; a
    callable maps ``values`` to keys (N, ...) itself.
    """
    if callable(discretise_func):
        keys = discretise_func(values)
        if not isinstance(keys, Tensor) or keys.ndim == 0 or keys.shape[0] != values.shape[0]:
            shape = tuple(keys.shape) if isinstance(keys, Tensor) else type(keys).__name__
            raise ValueError(f"discretise_func must return keys (N, ...) with N = {values.shape[0]}, got {shape}")
        return keys.reshape(values.shape[0], -1).to(values.device)
    if discretise_func == "top_n_sign":
        return values[:, :TOP_N].sign()
    if discretise_func == "sign":
        return values.sign()
    if discretise_func == "rank":
        return values.argsort(dim=1, descending=True, stable=True)
    return values.round(decimals=DECIMALS)


def consistency_scores(keys: Tensor, predictions: Tensor) -> Tensor:
    """Per sample: the share of the other samples with its key that also have its prediction (0 if none share its key)."""
    group = torch.unique(keys, dim=0, return_inverse=True)[1]
    others = ~torch.eye(keys.shape[0], dtype=torch.bool, device=keys.device)
    same_key = (group[:, None] == group[None, :]) & others
    same_both = same_key & (predictions[:, None] == predictions[None, :])
    return same_both.sum(dim=1).double() / (same_key.sum(dim=1).double() + DIVISOR_EPS)


class Consistency(SampleMeanMetric):
    """Mean over samples of the probability that inputs with the same explanation share the prediction.

    Quantus 0.6.0's ``Consistency`` (Dasgupta et al. 2022, local consistency): the attributions
    (after ``abs`` and ``normalise``, the latter dividing by the batch's largest magnitude) are
    discretised by ``discretise_func``; for each sample, the value is the share of the other samples
    of the same ``update`` with an equal discretised explanation whose predicted class (argmax of
    the model's scores) equals its own — 0 where no other sample shares its explanation (the count
    is divided by the number of such samples plus 1e-9, as Quantus does). Higher is better.

    The groups are formed within each ``update`` (Quantus: within each batch of ``batch_size``), so
    the value depends on how the samples are batched; across ``update`` calls and DDP ranks the
    per-sample values are averaged. A sample whose attributions or class scores are not finite
    counts as NaN and is kept out of the other samples' groups. Token ids (N, T) are accepted: the
    inputs are only given to the model.

    Parameters
    ----------
    discretise_func : str or callable
        ``"top_n_sign"`` (Quantus' default: despite the name, the signs of the first five values in
        flattened order, which with ``abs=True`` only tells zeros apart), ``"sign"``, ``"rank"``
        (the order of the values, largest first; ties in index order) or ``"floating_points"``
        (rounded to two decimals), or a callable mapping the attributions (N, F) to keys (N, ...).
    abs : bool
        Discretise ``|a|``.
    normalise : bool
        Divide the attributions by the batch's largest magnitude first.
    max_batch_size : int or None
        Most inputs sent through the model at once; ``None`` sizes the chunks to the device.
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    higher_is_better = True

    def __init__(
        self,
        discretise_func: Discretise = "top_n_sign",
        abs: bool = True,
        normalise: bool = True,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not callable(discretise_func) and discretise_func not in DISCRETISE_FUNCS:
            raise ValueError(
                f"unknown discretise_func {discretise_func!r}; expected one of {DISCRETISE_FUNCS} or a callable "
                "(attributions (N, F)) -> keys (N, ...)"
            )
        self.discretise_func = discretise_func
        self.abs = boolean("abs", abs)
        self.normalise = boolean("normalise", normalise)
        self.max_batch_size = optional_batch_size(max_batch_size)

    def update(
        self, model: Model, inputs: Tensor, attributions: Tensor, attention_mask: Optional[Tensor] = None
    ) -> None:
        """Predict ``inputs``, group the samples by discretised explanation and accumulate each sample's value.

        Parameters
        ----------
        model : callable
            Maps a batch of inputs to class scores (B, classes); an ``nn.Module`` runs in eval mode
            under ``torch.no_grad()`` and gets its training flags back.
        inputs : Tensor
            Images (N, C, H, W), vectors (N, D) or integer token ids (N, T).
        attributions : Tensor
            Attributions (N, ...), one row of values per sample.
        attention_mask : Tensor, optional
            For token ids: the mask (N, T) given to the model.
        """
        inputs = check_inputs(inputs)
        self._follow_device(inputs)
        raw = flat_attributions(check_same_batch("attributions", attributions, inputs.shape[0])).to(inputs.device)
        attention_mask = check_attention_mask(attention_mask, inputs)
        outputs = self._class_scores(model, inputs, attention_mask)
        finite = torch.isfinite(raw).all(dim=1) & torch.isfinite(outputs).all(dim=1)
        # non-finite samples are zeroed (kept out of the batch's largest magnitude) and get a key of
        # their own (their index in an extra column), outside every group
        values = quantus_attributions(torch.where(finite[:, None], raw, torch.zeros_like(raw)), self.abs, self.normalise)
        own = torch.where(finite, -1, torch.arange(raw.shape[0], device=raw.device)).double()
        keys = torch.cat([discretised(values, self.discretise_func).double(), own[:, None]], dim=1)
        self._accumulate(consistency_scores(keys, outputs.argmax(dim=1)), raw, outputs)

    def _class_scores(self, model: Model, inputs: Tensor, attention_mask: Optional[Tensor]) -> Tensor:
        """The model's class scores (N, classes) for ``inputs``, in chunks."""
        chunks = []
        with evaluation_mode(model):
            for start, stop in chunk_bounds(inputs, inputs.shape[0], self.max_batch_size):
                batch = inputs[start:stop]
                if attention_mask is None:
                    chunks.append(class_scores(model(batch), batch))
                else:
                    rows = attention_mask[start:stop]
                    chunks.append(class_scores(model(batch, attention_mask=rows), batch, rows))
        outputs = torch.cat(chunks)
        if outputs.ndim != 2:
            raise ValueError(f"the model must return scores of shape (batch, classes), got {tuple(outputs.shape)}")
        return outputs
