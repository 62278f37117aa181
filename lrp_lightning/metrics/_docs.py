"""Parameter descriptions shared by the metrics' docstrings, written once and filled in by :func:`fill_doc`.

A docstring names a fragment on a line of its own, ``{name}`` at the indentation of the parameter
lines; :func:`fill_doc` replaces it with the fragment indented to match, in the class docstring and
in the docstring of the ``update`` the class defines, so that Sphinx, numpydoc and ``help()`` show
the complete parameter lists.
"""
from typing import TypeVar

FRAGMENTS = {
    "relevance_options": """abs, normalise : bool
    Quantus' attribution options (``|a|``; division by the batch's largest ``|a|``).""",
    "quantus_baseline": """baseline : float, int, str or callable
    Quantus' ``perturb_baseline``: ``"black"`` (each sample's minimum), ``"white"``, ``"mean"``,
    ``"blur"``, a number or a callable ``(x) -> fill``; a token id for token-id inputs.""",
    "softmax_by_default": """softmax : bool
    Score the target softmax probability (Quantus' default) instead of the logit.""",
    "images_per_call": """max_batch_size : int or None
    Largest number of images sent through the model at once; ``None`` sizes the chunks to the device.
**kwargs
    Passed to ``torchmetrics.Metric``.""",
    "perturbed_model": """model : callable
    Maps a batch of inputs to class scores (B, classes); an ``nn.Module`` runs in eval mode
    under ``torch.no_grad()`` and gets its training flags back.""",
    "perturbed_arguments": """inputs : Tensor
    Images (N, C, H, W), vectors (N, D) or integer token ids (N, T).
attributions : Tensor
    The inputs' shape, or for images (N, 1, H, W) / (N, H, W); channels are summed.
target : Tensor
    Class indices (N,).
attention_mask : Tensor, optional
    For token ids: the mask (N, T) given to the model with every perturbed copy.""",
    "explainer": """explainer : str, Composite or callable
    What explains the clean and the perturbed inputs: a registry name (LRP composite or
    attributor), a Composite (built for the model as ``AttributionCallback`` builds them), or
    ``explain(model, inputs, target) -> attributions``.""",
    "noise_draws": """nr_samples : int
    Noise draws per sample.
lower_bound, upper_bound : float, float or None
    Noise uniform in ``[lower_bound, upper_bound]`` (``upper_bound=None``: ``[-lower_bound, lower_bound]``).
abs : bool
    Compare ``|Φ|``.""",
    "relative_stability": """normalise : bool
    Divide each explanation by its root mean square first (Quantus 0.6.0's default for this metric).
eps_min : float
    Floor of the denominator and replacement of zero divisors.
return_nan_when_prediction_changes : bool
    A sample whose predicted class changes under any draw counts as NaN (Quantus' default: True).""",
    "explained_per_call": """seed : int
    Seed of the noise generator.
max_batch_size : int or None
    Most inputs explained in one call; ``None`` sizes the chunks to the inputs' device.
**kwargs
    Passed to ``torchmetrics.Metric``.""",
    "explained_options": """abs : bool
    Compare ``|a|``.
normalise : bool
    Divide each explanation by its largest magnitude first.
max_batch_size : int or None
    Most inputs explained in one call; ``None`` sizes the chunks to the inputs' device.
**kwargs
    Passed to ``torchmetrics.Metric``.""",
    "token_update": """model : callable
    Maps a batch of inputs to class scores (B, classes) — or to an object with ``logits``, or
    to per-position logits (B, T, V) of which the last position counts; an ``nn.Module`` runs
    in eval mode under ``torch.no_grad()`` and gets its training flags back afterwards.
inputs : Tensor
    Images (N, C, H, W), vectors (N, D), or integer token ids (N, T) (then ``baseline`` must be
    a token id, e.g. the pad id).
attributions : Tensor
    The inputs' shape, or for images (N, 1, H, W) / (N, H, W); channels are summed.
target : Tensor
    Class indices (N,).
attention_mask : Tensor, optional
    For token ids: the mask (N, T) passed to the model as ``attention_mask=`` with every
    perturbed copy of its sample.""",
}
FRAGMENTS["image_update"] = FRAGMENTS["perturbed_model"].replace("a batch of inputs", "a batch of images") + """
inputs : Tensor
    Images (N, C, H, W).
attributions : Tensor
    The inputs' shape, or (N, 1, H, W) / (N, H, W); channels are summed.
target : Tensor
    Class indices (N,)."""
FRAGMENTS["perturbed_update"] = FRAGMENTS["perturbed_model"] + "\n" + FRAGMENTS["perturbed_arguments"]
FRAGMENTS["quantus_perturbation"] = "\n".join(
    FRAGMENTS[name] for name in ("relevance_options", "quantus_baseline", "softmax_by_default", "images_per_call")
)
FRAGMENTS["relative_stability"] = "\n".join(
    FRAGMENTS[name] for name in ("explainer", "noise_draws", "relative_stability")
)

T = TypeVar("T", bound=type)


def filled(docstring: str) -> str:
    """``docstring`` with every fragment line ``{name}`` replaced by the fragment at that line's indentation."""
    lines = []
    for line in docstring.split("\n"):
        name = line.strip()
        if name.startswith("{") and name.endswith("}") and name[1:-1] in FRAGMENTS:
            indent = line[: len(line) - len(line.lstrip())]
            lines += [indent + part for part in FRAGMENTS[name[1:-1]].split("\n")]
        else:
            lines.append(line)
    return "\n".join(lines)


def fill_doc(cls: T) -> T:
    """Class decorator: fill the fragments in ``cls``' docstring and in that of the ``update`` it defines."""
    cls.__doc__ = filled(cls.__doc__ or "")
    update = cls.__dict__.get("update")
    if update is not None and update.__doc__:
        update.__doc__ = filled(update.__doc__)
    return cls
