"""Class Artifact Compensation (ClArC, Anders et al. 2022): move a layer's activations along a concept
activation vector, with a forward hook that is removed without a trace."""
from __future__ import annotations

from typing import Any, Optional

import torch

from lrp_lightning.revise.layers import channels_last, named_layer
from lrp_lightning.revise.cav import ConceptActivationVector

MODES = ("p", "a")


def project_along(activation: torch.Tensor, cav: ConceptActivationVector, reference: torch.Tensor) -> torch.Tensor:
    """Return ``a − v vᵀ(a − z)`` for every sample (every position, for a pooled CAV): the component of ``a`` along
    the unit direction ``v`` replaced by that of the reference ``z``.

    ``z = z̄₀`` (clean mean) is P-ClArC's projection ``a ← a − v vᵀ(a − z̄₀)``; ``z = z̄₁`` (artifact mean) is
    A-ClArC's ``a ← a + v vᵀ(z̄₁ − a)``, the same map.

    Parameters
    ----------
    activation : torch.Tensor
        ``(N, C, *spatial)`` or ``(N, D)``.
    cav : ConceptActivationVector
        Gives ``v`` and whether it lives in channel space (pooled) or in the flattened space.
    reference : torch.Tensor
        ``z``, of ``v``'s shape.

    Returns
    -------
    torch.Tensor
        A new tensor of ``activation``'s shape (in its graph).
    """
    direction = cav.direction.to(activation)
    reference = reference.to(activation)
    if cav.pooled:
        values = channels_last(activation)
        if values.shape[-1] != direction.shape[0]:
            raise ValueError(f"the CAV has {direction.shape[0]} channels, the layer output {values.shape[-1]}; fit "
                             "the CAV on this layer's activations")
        shift = ((values - reference) @ direction).unsqueeze(-1) * direction
        moved = values - shift
        return moved.movedim(-1, 1) if activation.ndim > 2 else moved
    values = activation.flatten(1)
    if values.shape[1] != direction.shape[0]:
        raise ValueError(f"the CAV has {direction.shape[0]} features, the layer output {values.shape[1]} per sample; "
                         "fit the CAV on this layer's flattened activations")
    moved = values - ((values - reference) @ direction).unsqueeze(1) * direction
    return moved.reshape(activation.shape)


class ClArC:
    """P-ClArC or A-ClArC at one layer: a forward hook replacing the layer's output ``a`` by
    ``a − v vᵀ(a − z)``.

    ``mode="p"`` (projective, training-free correction): ``z = z̄₀``, the clean samples' mean — the artifact
    direction is projected out. ``mode="a"`` (augmentative, for fine-tuning): ``z = z̄₁``, the artifact samples'
    mean — the artifact is added to every sample, so fine-tuning unlearns it. Use as a context manager
    (``with ClArC(model, "features.3", cav): ...``) or with :meth:`register` and :meth:`remove`; the model is
    bitwise as before once removed (only a hook is added), also when the body raises.

    Parameters
    ----------
    model : torch.nn.Module
        The model.
    layer : str
        Name of the submodule (``model.named_modules()``) whose output is changed.
    cav : ConceptActivationVector
        The artifact direction at that layer.
    mode : {"p", "a"}
        P-ClArC or A-ClArC.
    reference : torch.Tensor, optional
        ``z``; default the CAV's clean mean (``"p"``) or artifact mean (``"a"``).

    Raises
    ------
    ValueError
        For an unknown layer name (the message lists the known ones) or mode.
    """

    def __init__(self, model: torch.nn.Module, layer: str, cav: ConceptActivationVector, mode: str = "p",
                 reference: Optional[torch.Tensor] = None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; pass 'p' (P-ClArC) or 'a' (A-ClArC)")
        if not isinstance(cav, ConceptActivationVector):
            raise TypeError(f"cav must be a ConceptActivationVector (see ConceptActivationVector.fit), got {type(cav).__name__}")
        self.module = named_layer(model, layer)
        self.model, self.layer, self.cav, self.mode = model, layer, cav, mode
        self.reference = (cav.clean_mean if mode == "p" else cav.artifact_mean) if reference is None else reference
        self._handle: Optional[Any] = None

    def _hook(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return project_along(output, self.cav, self.reference)

    def register(self) -> "ClArC":
        """Attach the hook (once).

        Raises
        ------
        RuntimeError
            If it is attached already.
        """
        if self._handle is not None:
            raise RuntimeError("this ClArC is registered already; remove() it first")
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def remove(self) -> None:
        """Detach the hook (nothing if it is not attached)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.remove()

    def __enter__(self) -> torch.nn.Module:
        self.register()
        return self.model

    def __exit__(self, *exc_info: Any) -> None:
        self.remove()
