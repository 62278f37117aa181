"""Concept activation vectors: a unit direction in a layer's activation space that separates artifact samples
from clean ones (Kim et al. 2018; the "signal" pattern of Haufe et al. 2014, as ClArC uses it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch

METHODS = ("signal", "ridge", "svm")


def pooled_activations(activations: torch.Tensor, pool: bool) -> torch.Tensor:
    """Activations ``(N, C, *spatial)`` as ``(N, D)``: averaged over the spatial axes (``pool``, ``D = C``) or
    flattened (``D = C * prod(spatial)``); ``(N, C)`` as it is.

    Parameters
    ----------
    activations : torch.Tensor
        One row per sample.
    pool : bool
        Average over the axes after the channel axis instead of flattening them.

    Returns
    -------
    torch.Tensor
        ``(N, D)``.
    """
    if activations.ndim < 2:
        raise ValueError(f"activations need a batch and a feature axis, got shape {tuple(activations.shape)}")
    if pool and activations.ndim > 2:
        return activations.flatten(2).mean(dim=2)
    return activations.flatten(1)


def _checked_labels(is_artifact: Union[torch.Tensor, list], count: int) -> torch.Tensor:
    labels = torch.as_tensor(is_artifact).reshape(-1)
    if labels.numel() != count:
        raise ValueError(f"is_artifact has {labels.numel()} entries for {count} samples; give one flag per sample")
    labels = labels.bool()
    artifacts = int(labels.sum())
    if artifacts == 0 or artifacts == count:
        kind = "artifact" if artifacts else "clean"
        raise ValueError(
            f"all {count} samples are {kind}; a concept activation vector separates two classes, pass at least one "
            "artifact and one clean sample"
        )
    return labels


def _signal(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Haufe et al.'s pattern ``sum_i (a_i - mean a)(t_i - mean t)`` (a covariance, up to its scale)."""
    return ((features - features.mean(dim=0)) * (target - target.mean()).unsqueeze(1)).sum(dim=0)


def _ridge(features: torch.Tensor, target: torch.Tensor, alpha: float) -> torch.Tensor:
    """The weight of a ridge regression of the centred labels on the centred features:
    ``w = (X^T X + alpha I)^-1 X^T (t - mean t)``."""
    centred = features - features.mean(dim=0)
    gram = centred.T @ centred + alpha * torch.eye(centred.shape[1], dtype=centred.dtype, device=centred.device)
    return torch.linalg.solve(gram, centred.T @ (target - target.mean()))


def _svm(features: torch.Tensor, target: torch.Tensor, alpha: float, steps: int = 500) -> torch.Tensor:
    """The weight of a linear support vector machine, ``argmin_w,b mean max(0, 1 − y (wᵀx + b))² + alpha |w|²`` with
    ``y = ±1`` on standardised features (squared hinge; deterministic gradient descent with step ``1 / L``, ``L``
    the gradient's Lipschitz bound), mapped back to the features."""
    scale = features.std(dim=0).clamp(min=torch.finfo(features.dtype).eps)
    standard = torch.cat([(features - features.mean(dim=0)) / scale, torch.ones_like(features[:, :1])], dim=1)
    signs = target * 2 - 1
    count = features.shape[0]
    step = 1.0 / (2.0 / count * torch.linalg.matrix_norm(standard, ord=2) ** 2 + 2.0 * alpha)
    penalty = torch.full((standard.shape[1],), 2.0 * alpha, dtype=features.dtype, device=features.device)
    penalty[-1] = 0.0  # the bias is not regularised
    weight = torch.zeros(standard.shape[1], dtype=features.dtype, device=features.device)
    for _ in range(steps):
        margins = (1 - signs * (standard @ weight)).clamp(min=0)
        weight = weight - step * (-2.0 / count * standard.T @ (signs * margins) + penalty * weight)
    return weight[:-1] / scale


@dataclass
class ConceptActivationVector:
    """A unit direction ``v`` in a layer's activation space pointing from clean towards artifact samples.

    Build one with :meth:`fit`. ``clean_mean`` and ``artifact_mean`` are the mean activations ``z0``, ``z1`` of
    the two groups (in the same space as ``direction``), the references of P- and A-ClArC.

    Attributes
    ----------
    direction : torch.Tensor
        ``v``, unit norm, shape ``(D,)``: ``C`` for pooled activations, ``C * prod(spatial)`` for flattened ones.
    clean_mean, artifact_mean : torch.Tensor
        ``z0`` and ``z1``, shape ``(D,)``.
    pooled : bool
        Whether ``v`` lives in the channel space (applied at every position) or in the flattened space.
    method : str
        How ``v`` was found.
    """

    direction: torch.Tensor
    clean_mean: torch.Tensor
    artifact_mean: torch.Tensor
    pooled: bool = True
    method: str = "signal"

    @classmethod
    def fit(cls, activations: torch.Tensor, is_artifact: Union[torch.Tensor, list], method: str = "signal",
            pool: bool = True, alpha: float = 1.0) -> "ConceptActivationVector":
        """Fit the direction separating artifact from clean activations.

        ``"signal"``: Haufe et al.'s pattern ``v ∝ Σ_i (a_i − ā)(t_i − t̄)``; ``"ridge"``: the weight of a ridge
        regression of ``t`` on ``a``; ``"svm"``: the weight of a linear SVM. Each is normalised to unit length and
        signed so that artifact samples score higher than clean ones on average.

        Parameters
        ----------
        activations : torch.Tensor
            ``(N, C, *spatial)`` or ``(N, D)`` activations of one layer.
        is_artifact : torch.Tensor or list of bool
            ``t_i``: whether sample ``i`` carries the artifact; both kinds must occur.
        method : {"signal", "ridge", "svm"}
            The estimator.
        pool : bool
            Average spatial axes (direction in channel space) instead of flattening them.
        alpha : float
            Regularisation of ``"ridge"`` and ``"svm"``.

        Returns
        -------
        ConceptActivationVector

        Raises
        ------
        ValueError
            If ``method`` is unknown, the labels do not match the samples, or only one class occurs.
        """
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; pass one of {', '.join(METHODS)}")
        features = pooled_activations(activations.detach(), pool)
        if not features.is_floating_point():
            features = features.float()
        labels = _checked_labels(is_artifact, features.shape[0]).to(features.device)
        target = labels.to(features.dtype)
        if method == "signal":
            direction = _signal(features, target)
        elif method == "ridge":
            direction = _ridge(features, target, alpha)
        else:
            direction = _svm(features, target, alpha)
        norm = direction.norm()
        if not torch.isfinite(norm) or norm == 0:
            raise ValueError("the artifact and clean activations do not differ in any direction; no CAV exists here")
        direction = direction / norm
        clean_mean, artifact_mean = features[~labels].mean(dim=0), features[labels].mean(dim=0)
        if (artifact_mean - clean_mean) @ direction < 0:
            direction = -direction
        return cls(direction, clean_mean, artifact_mean, pool, method)

    def scores(self, activations: torch.Tensor) -> torch.Tensor:
        """Return ``v^T a_i`` per sample (activations pooled or flattened as at fitting), shape ``(N,)``."""
        return pooled_activations(activations, self.pooled) @ self.direction.to(activations)

    def separability(self, activations: torch.Tensor, is_artifact: Union[torch.Tensor, list]) -> float:
        """Accuracy of the threshold halfway between the group means' scores, on (held-out) labelled activations.

        Parameters
        ----------
        activations : torch.Tensor
            Activations of the layer.
        is_artifact : torch.Tensor or list of bool
            Their labels.

        Returns
        -------
        float
            The share of samples on the correct side of ``v^T (z0 + z1) / 2``.
        """
        scores = self.scores(activations.detach())
        labels = torch.as_tensor(is_artifact).reshape(-1).bool().to(scores.device)
        threshold = (self.clean_mean + self.artifact_mean).to(scores) @ self.direction.to(scores) / 2
        return float(((scores > threshold) == labels).float().mean())

    def to(self, *args, **kwargs) -> "ConceptActivationVector":
        """Return the CAV with its tensors moved/cast (``torch.Tensor.to``'s arguments)."""
        return ConceptActivationVector(self.direction.to(*args, **kwargs), self.clean_mean.to(*args, **kwargs),
                                       self.artifact_mean.to(*args, **kwargs), self.pooled, self.method)
