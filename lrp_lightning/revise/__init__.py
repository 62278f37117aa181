"""Revision: correct a model that is right for the wrong reasons (Reveal-to-Revise, Pahde et al. 2023).

- :class:`RightReasonsLoss`: Ross et al.'s penalty on the explanation inside masks (input gradient or LRP).
- :class:`ConceptActivationVector`: the artifact direction in a layer's activation space.
- :class:`ClArC`: P-ClArC (project the artifact out) and A-ClArC (add it, for fine-tuning) as a removable hook.
- :class:`RRClArCLoss`: penalise the sensitivity along the artifact direction.
- :func:`concept_masks`: artifact masks without annotations, from the CAV's relevance at the input.
"""
from lrp_lightning.revise.cav import ConceptActivationVector
from lrp_lightning.revise.clarc import ClArC, project_along
from lrp_lightning.revise.masks import concept_heatmaps, concept_masks
from lrp_lightning.revise.right_reasons import RightReasonsLoss
from lrp_lightning.revise.rr_clarc import RRClArCLoss

__all__ = [
    "ClArC",
    "ConceptActivationVector",
    "RRClArCLoss",
    "RightReasonsLoss",
    "concept_heatmaps",
    "concept_masks",
    "project_along",
]
