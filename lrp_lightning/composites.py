"""Composites, registered in a global composite dict.

A composite maps a model's modules to rules. The built-in LRP composites start from
:func:`layer_map_base` and add their own entries; a user ``layer_map``/``first_map`` is prepended,
so it wins over the built-in entries. "First layer" is the first module, in ``model.modules()``
order, that matches an entry of ``first_map``.
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional, Sequence

import torch

from lrp_lightning import _arguments
from lrp_lightning.auto_canonizers import CanonizerArg, auto_canonizers, check_canonizers, uncanonized_modules
from lrp_lightning.core import Composite, Hook, Stabilizer
from lrp_lightning.transformer.gradient_rules import (
    AffineEpsilon,
    AffineGamma,
    ConstantAttention,
    ConstantAttentionWeights,
    ConstantGate,
    IdentityRule,
    LayerNormEpsilon,
    RMSNormEpsilon,
    UniformAttention,
    UniformProduct,
)
from lrp_lightning.layer import GatedMul, ScaledDotProductAttention, Sum
from lrp_lightning.rules import (
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Norm,
    Pass,
    ReLUBetaSmooth,
    ReLUDeconvNet,
    ReLUGuidedBackprop,
    ZBox,
    ZPlus,
)
from lrp_lightning.types import (
    Activation,
    Affine,
    AvgPool,
    BatchNorm,
    Convolution,
    ElementwiseActivation,
    LayerNorm,
    Linear,
    Product,
    RMSNorm,
)

class CompositeRegistry(dict):
    """The registry of composite classes by name; an unknown name raises a KeyError listing the known ones."""

    def __missing__(self, name: str) -> type:
        raise KeyError(f"unknown composite {name!r}; registered composites: {', '.join(sorted(self))}")


COMPOSITES: CompositeRegistry = CompositeRegistry()

LayerMap = Sequence[tuple]


def register_composite(name: str) -> Callable[[type], type]:
    """Register a composite in the global COMPOSITES dict under ``name`` (a class decorator)."""

    def wrapped(composite: type) -> type:
        COMPOSITES[name] = composite
        return composite

    return wrapped


def get_composite(name: str) -> type:
    """Return the composite class registered under ``name``.

    Raises
    ------
    KeyError
        If no composite is registered under ``name``; the message lists the registered names.
    """
    return COMPOSITES[name]


def layer_map_base(stabilizer: float = 1e-6) -> list:
    """Return a basic layer map (list of 2-tuples) shared by all built-in LayerMapComposites.

    Activations and BatchNorm pass relevance through; sums and average pooling use the Norm rule.

    Parameters
    ----------
    stabilizer : float or callable
        Stabilizer of the Norm rule.
    """
    return [
        (Activation, Pass()),
        (Sum, Norm(stabilizer)),
        (AvgPool, Norm(stabilizer)),
        (BatchNorm, Pass()),
    ]


class AutoCanonizerComposite(Composite):
    """A Composite whose ``canonizers`` may be ``"auto"``: chosen for the model it is registered on.

    ``"auto"`` resolves, at each :meth:`register` on a model (not while registered), to
    :func:`lrp_lightning.auto_canonizers.auto_canonizers` of that model; None or a list is used as
    given, as by :class:`~lrp_lightning.core.Composite`.

    Parameters
    ----------
    module_map : callable, optional
        ``(ctx, name, module) -> Hook or None``, as for :class:`~lrp_lightning.core.Composite`.
    canonizers : "auto", list of Canonizer or None, optional
        The canonizers, or ``"auto"``.

    Raises
    ------
    ValueError
        For a string other than ``"auto"``.
    """

    def __init__(self, module_map=None, canonizers: CanonizerArg = None) -> None:
        self.auto_canonizers = check_canonizers(canonizers) == "auto"
        super().__init__(module_map, None if self.auto_canonizers else canonizers)

    def register(self, module: torch.nn.Module) -> None:
        """Resolve ``canonizers="auto"`` for ``module`` (unless registered already), then register as
        :meth:`lrp_lightning.core.Composite.register`."""
        if self.auto_canonizers and not (self.handles or self.canonizer_instances):
            self.canonizers = auto_canonizers(module)
        super().register(module)


class LayerMapComposite(AutoCanonizerComposite):
    """A Composite for which hooks are specified by a mapping from module types to hooks.

    Parameters
    ----------
    layer_map : list of (tuple of types, Hook)
        The first entry whose types match a module (``isinstance``) gives its hook.
    canonizers : "auto", list of Canonizer or None, optional
        Canonizers applied before the hooks; ``"auto"``: those the registry of
        :mod:`lrp_lightning.auto_canonizers` finds for the model at each registration.
    """

    def __init__(self, layer_map: LayerMap, canonizers: CanonizerArg = None) -> None:
        self.layer_map = _arguments.rule_map("layer_map", layer_map, Hook, allow_none=False)
        super().__init__(self.mapping, canonizers)

    def mapping(self, ctx: dict, name: str, module: torch.nn.Module) -> Optional[Hook]:
        """Return the hook of the first ``layer_map`` entry matching ``module``, or None."""
        return next((hook for module_types, hook in self.layer_map if isinstance(module, module_types)), None)


class SpecialFirstLayerMapComposite(LayerMapComposite):
    """A LayerMapComposite with a separate map for the first matching layer.

    Parameters
    ----------
    layer_map : list of (tuple of types, Hook)
        Mapping for all but the first layer.
    first_map : list of (tuple of types, Hook)
        Mapping for the first module (in ``model.modules()`` order) that matches one of its entries.
    canonizers : "auto", list of Canonizer or None, optional
        Canonizers applied before the hooks; ``"auto"``: those the registry of
        :mod:`lrp_lightning.auto_canonizers` finds for the model at each registration.
    """

    def __init__(self, layer_map: LayerMap, first_map: LayerMap, canonizers: CanonizerArg = None) -> None:
        self.first_map = _arguments.rule_map("first_map", first_map, Hook, allow_none=False)
        super().__init__(layer_map, canonizers)

    def mapping(self, ctx: dict, name: str, module: torch.nn.Module) -> Optional[Hook]:
        """Return the first-layer hook for the first match of ``first_map``, else the layer map's hook."""
        if not ctx.get("first_layer_visited", False):
            for module_types, hook in self.first_map:
                if isinstance(module, module_types):
                    ctx["first_layer_visited"] = True
                    return hook
        return super().mapping(ctx, name, module)


class NameMapComposite(AutoCanonizerComposite):
    """A Composite for which hooks are specified by a mapping from module names to hooks.

    Parameters
    ----------
    name_map : list of (tuple of str, Hook)
        Module names (as in ``model.named_modules()``) and the hook they get.
    canonizers : "auto", list of Canonizer or None, optional
        Canonizers applied before the hooks; ``"auto"``: those the registry of
        :mod:`lrp_lightning.auto_canonizers` finds for the model at each registration.
    """

    def __init__(self, name_map: Sequence[tuple], canonizers: CanonizerArg = None) -> None:
        self.name_map = _arguments.name_map("name_map", name_map, _arguments.instance(Hook))
        super().__init__(self.mapping, canonizers)

    def mapping(self, ctx: dict, name: str, module: torch.nn.Module) -> Optional[Hook]:
        """Return the hook of the first ``name_map`` entry listing ``name``, or None."""
        return next((hook for names, hook in self.name_map if name in names), None)


class MixedComposite(AutoCanonizerComposite):
    """A Composite for which hooks are specified by a list of composites, matched in list order.

    Parameters
    ----------
    composites : list of Composite
        Every module is offered to every composite, in list order; the first hook returned decides.
    canonizers : "auto", list of Canonizer or None, optional
        Canonizers applied before the hooks (those of the listed composites are not used); ``"auto"``:
        those the registry of :mod:`lrp_lightning.auto_canonizers` finds for the model at each
        registration.
    """

    def __init__(self, composites: Sequence[Composite], canonizers: CanonizerArg = None) -> None:
        self.composites = _arguments.sequence("composites", composites, _arguments.instance(Composite))
        super().__init__(self.mapping, canonizers)

    def mapping(self, ctx: dict, name: str, module: torch.nn.Module) -> Optional[Hook]:
        """Return the first hook any of the composites maps ``module`` to, or None.

        Every composite sees every module (in list order, each with its own context), also when an
        earlier one claims it: a first-layer map whose first layer a name map claims has still
        seen its first layer.
        """
        hooks = [
            composite.module_map(ctx.setdefault(index, {}), name, module) for index, composite in enumerate(self.composites)
        ]
        return next((hook for hook in hooks if hook is not None), None)


class NameLayerMapComposite(MixedComposite):
    """A Composite whose hooks come from a name map first and a layer (type) map second.

    Parameters
    ----------
    name_map : list of (tuple of str, Hook), optional
        Mapping from module names to hooks; matched first.
    layer_map : list of (tuple of types, Hook), optional
        Mapping from module types to hooks.
    canonizers : "auto", list of Canonizer or None, optional
        Canonizers applied before the hooks; ``"auto"``: those the registry of
        :mod:`lrp_lightning.auto_canonizers` finds for the model at each registration.
    """

    def __init__(
        self, name_map: Optional[Sequence[tuple]] = None, layer_map: Optional[LayerMap] = None, canonizers: CanonizerArg = None
    ) -> None:
        super().__init__(
            [NameMapComposite([] if name_map is None else name_map),
             LayerMapComposite([] if layer_map is None else layer_map)],
            canonizers,
        )


def _user_map(name: str, value: Optional[LayerMap]) -> list:
    """A user's ``layer_map``/``first_map`` (None: empty), checked."""
    return _arguments.rule_map(name, value, Hook)


def _lrp_layer_map(layer_map, stabilizer, own_entries) -> list:
    return _user_map("layer_map", layer_map) + layer_map_base(stabilizer) + own_entries


@register_composite("epsilon_gamma_box")
class EpsilonGammaBox(SpecialFirstLayerMapComposite):
    """ZBox for the first convolution, Gamma for the other convolutions, Epsilon for fully connected layers.

    Parameters
    ----------
    low, high : torch.Tensor
        Lowest and highest possible input values, broadcast to the input's shape.
    epsilon : float or callable
        Stabilizer of the Epsilon rule.
    gamma : float
        Gamma of the Gamma rule.
    stabilizer : float or callable
        Stabilizer of the other rules.
    layer_map, first_map : list of (tuple of types, Hook), optional
        Prepended to the composite's own maps.
    zero_params : str or list of str, optional
        Parameters set to zero in the rules' modified forward maps.
    canonizers : "auto", list of Canonizer or None, optional
        Canonizers applied before the hooks; ``"auto"``: those the registry of
        :mod:`lrp_lightning.auto_canonizers` finds for the model at each registration.
    """

    def __init__(
        self,
        low: torch.Tensor,
        high: torch.Tensor,
        epsilon: float = 1e-6,
        gamma: float = 0.25,
        stabilizer: float = 1e-6,
        layer_map: Optional[LayerMap] = None,
        first_map: Optional[LayerMap] = None,
        zero_params=None,
        canonizers: CanonizerArg = None,
    ) -> None:
        layer_map = _lrp_layer_map(
            layer_map,
            stabilizer,
            [
                (Convolution, Gamma(gamma=gamma, stabilizer=stabilizer, zero_params=zero_params)),
                (torch.nn.Linear, Epsilon(epsilon=epsilon, zero_params=zero_params)),
            ],
        )
        first_map = _user_map("first_map", first_map) + [
            (Convolution, ZBox(low=low, high=high, stabilizer=stabilizer, zero_params=zero_params))
        ]
        super().__init__(layer_map, first_map, canonizers)


def _epsilon_plus_map(layer_map, epsilon, stabilizer, zero_params) -> list:
    return _lrp_layer_map(
        layer_map,
        stabilizer,
        [
            (Convolution, ZPlus(stabilizer=stabilizer, zero_params=zero_params)),
            (torch.nn.Linear, Epsilon(epsilon=epsilon, zero_params=zero_params)),
        ],
    )


def _epsilon_alpha2_beta1_map(layer_map, epsilon, stabilizer, zero_params) -> list:
    return _lrp_layer_map(
        layer_map,
        stabilizer,
        [
            (Convolution, AlphaBeta(alpha=2.0, beta=1.0, stabilizer=stabilizer, zero_params=zero_params)),
            (torch.nn.Linear, Epsilon(epsilon=epsilon, zero_params=zero_params)),
        ],
    )


def _flat_first_map(first_map, stabilizer, zero_params) -> list:
    return _user_map("first_map", first_map) + [(Linear, Flat(stabilizer=stabilizer, zero_params=zero_params))]


@register_composite("epsilon_plus")
class EpsilonPlus(LayerMapComposite):
    """ZPlus for all convolutions, Epsilon for all fully connected layers.

    Parameters
    ----------
    epsilon : float or callable
        Stabilizer of the Epsilon rule.
    stabilizer : float or callable
        Stabilizer of the other rules.
    layer_map : list of (tuple of types, Hook), optional
        Prepended to the composite's own map.
    zero_params : str or list of str, optional
        Parameters set to zero in the rules' modified forward maps.
    canonizers : "auto", list of Canonizer or None, optional
        Canonizers applied before the hooks; ``"auto"``: those the registry of
        :mod:`lrp_lightning.auto_canonizers` finds for the model at each registration.
    """

    def __init__(self, epsilon=1e-6, stabilizer=1e-6, layer_map=None, zero_params=None, canonizers=None) -> None:
        super().__init__(_epsilon_plus_map(layer_map, epsilon, stabilizer, zero_params), canonizers)


@register_composite("epsilon_plus_flat")
class EpsilonPlusFlat(SpecialFirstLayerMapComposite):
    """Flat for the first linear layer, ZPlus for the other convolutions, Epsilon for fully connected layers.

    Parameters
    ----------
    epsilon : float or callable
        Stabilizer of the Epsilon rule.
    stabilizer : float or callable
        Stabilizer of the other rules.
    layer_map, first_map : list of (tuple of types, Hook), optional
        Prepended to the composite's own maps.
    zero_params : str or list of str, optional
        Parameters set to zero in the rules' modified forward maps.
    canonizers : "auto", list of Canonizer or None, optional
        Canonizers applied before the hooks; ``"auto"``: those the registry of
        :mod:`lrp_lightning.auto_canonizers` finds for the model at each registration.
    """

    def __init__(
        self, epsilon=1e-6, stabilizer=1e-6, layer_map=None, first_map=None, zero_params=None, canonizers=None
    ) -> None:
        super().__init__(
            _epsilon_plus_map(layer_map, epsilon, stabilizer, zero_params),
            _flat_first_map(first_map, stabilizer, zero_params),
            canonizers,
        )


@register_composite("epsilon_alpha2_beta1")
class EpsilonAlpha2Beta1(LayerMapComposite):
    """AlphaBeta(2, 1) for all convolutions, Epsilon for all fully connected layers.

    Parameters
    ----------
    epsilon : float or callable
        Stabilizer of the Epsilon rule.
    stabilizer : float or callable
        Stabilizer of the other rules.
    layer_map : list of (tuple of types, Hook), optional
        Prepended to the composite's own map.
    zero_params : str or list of str, optional
        Parameters set to zero in the rules' modified forward maps.
    canonizers : "auto", list of Canonizer or None, optional
        Canonizers applied before the hooks; ``"auto"``: those the registry of
        :mod:`lrp_lightning.auto_canonizers` finds for the model at each registration.
    """

    def __init__(self, epsilon=1e-6, stabilizer=1e-6, layer_map=None, zero_params=None, canonizers=None) -> None:
        super().__init__(_epsilon_alpha2_beta1_map(layer_map, epsilon, stabilizer, zero_params), canonizers)


@register_composite("epsilon_alpha2_beta1_flat")
class EpsilonAlpha2Beta1Flat(SpecialFirstLayerMapComposite):
    """Flat for the first linear layer, AlphaBeta(2, 1) for the other convolutions, Epsilon for fully connected layers.

    Parameters
    ----------
    epsilon : float or callable
        Stabilizer of the Epsilon rule.
    stabilizer : float or callable
        Stabilizer of the other rules.
    layer_map, first_map : list of (tuple of types, Hook), optional
        Prepended to the composite's own maps.
    zero_params : str or list of str, optional
        Parameters set to zero in the rules' modified forward maps.
    canonizers : "auto", list of Canonizer or None, optional
        Canonizers applied before the hooks; ``"auto"``: those the registry of
        :mod:`lrp_lightning.auto_canonizers` finds for the model at each registration.
    """

    def __init__(
        self, epsilon=1e-6, stabilizer=1e-6, layer_map=None, first_map=None, zero_params=None, canonizers=None
    ) -> None:
        super().__init__(
            _epsilon_alpha2_beta1_map(layer_map, epsilon, stabilizer, zero_params),
            _flat_first_map(first_map, stabilizer, zero_params),
            canonizers,
        )


@register_composite("excitation_backprop")
class ExcitationBackprop(LayerMapComposite):
    """ExcitationBackprop (Zhang et al., 2016): ZPlus for all linear layers, Norm for sums and average pooling.

    Activations and BatchNorm keep their plain gradient (no Pass rule), as in zennit.

    Parameters
    ----------
    stabilizer : float or callable
        Stabilizer of the rules.
    layer_map : list of (tuple of types, Hook), optional
        Prepended to the composite's own map.
    zero_params : str or list of str, optional
        Parameters set to zero in the rules' modified forward maps.
    canonizers : "auto", list of Canonizer or None, optional
        Canonizers applied before the hooks; ``"auto"``: those the registry of
        :mod:`lrp_lightning.auto_canonizers` finds for the model at each registration.
    """

    def __init__(self, stabilizer=1e-6, layer_map=None, zero_params=None, canonizers=None) -> None:
        super().__init__(
            _user_map("layer_map", layer_map)
            + [
                (Sum, Norm(stabilizer)),
                (AvgPool, Norm(stabilizer)),
                (Linear, ZPlus(stabilizer=stabilizer, zero_params=zero_params)),
            ],
            canonizers,
        )


class _ReLUComposite(LayerMapComposite):
    """A composite that only changes the gradient of ReLUs (not an LRP composite)."""

    warn_uncovered = False


@register_composite("guided_backprop")
class GuidedBackprop(_ReLUComposite):
    """GuidedBackprop (Springenberg et al., 2015): ReLU gradients only pass positive incoming gradients.

    Parameters
    ----------
    layer_map : list of (tuple of types, Hook), optional
        Prepended to the composite's own map.
    canonizers : "auto", list of Canonizer or None, optional
        Canonizers applied before the hooks; ``"auto"``: those the registry of
        :mod:`lrp_lightning.auto_canonizers` finds for the model at each registration.
    """

    def __init__(self, layer_map=None, canonizers=None) -> None:
        super().__init__(_user_map("layer_map", layer_map) + [(torch.nn.ReLU, ReLUGuidedBackprop())], canonizers)


@register_composite("deconvnet")
class DeconvNet(_ReLUComposite):
    """DeconvNet (Zeiler and Fergus, 2014): ReLU gradients are the positive part of the incoming gradient.

    Parameters
    ----------
    layer_map : list of (tuple of types, Hook), optional
        Prepended to the composite's own map.
    canonizers : "auto", list of Canonizer or None, optional
        Canonizers applied before the hooks; ``"auto"``: those the registry of
        :mod:`lrp_lightning.auto_canonizers` finds for the model at each registration.
    """

    def __init__(self, layer_map=None, canonizers=None) -> None:
        super().__init__(_user_map("layer_map", layer_map) + [(torch.nn.ReLU, ReLUDeconvNet())], canonizers)


@register_composite("beta_smooth")
class BetaSmooth(_ReLUComposite):
    """ReLU gradients replaced by the softplus gradient ``sigmoid(beta x)`` (Dombrowski et al., 2019).

    Parameters
    ----------
    beta_smooth : float
        Sharpness of the softplus.
    layer_map : list of (tuple of types, Hook), optional
        Prepended to the composite's own map.
    zero_params : str or list of str, optional
        Accepted for a uniform signature; no rule of this composite has parameters.
    canonizers : "auto", list of Canonizer or None, optional
        Canonizers applied before the hooks; ``"auto"``: those the registry of
        :mod:`lrp_lightning.auto_canonizers` finds for the model at each registration.
    """

    def __init__(self, beta_smooth=10.0, layer_map=None, zero_params=None, canonizers=None) -> None:
        _arguments.names("zero_params", zero_params)  # accepted for zennit's signature; ReLUs have no parameters
        super().__init__(_user_map("layer_map", layer_map) + [(torch.nn.ReLU, ReLUBetaSmooth(beta_smooth=beta_smooth))], canonizers)


class _TransformerComposite(LayerMapComposite):
    """Rules of the transformer composites in the gradient view (see :mod:`lrp_lightning.transformer.gradient_rules`).

    ``canonizers="auto"`` (their default) resolves as for every :class:`AutoCanonizerComposite`;
    None or a list replaces them.
    """

    gradient_view = True
    rule_free_types = (torch.nn.Embedding,)

    def __init__(self, epsilon, gamma, layer_map, canonizers, softmax_map: list) -> None:
        check_canonizers(canonizers)
        Stabilizer.ensure(epsilon, "epsilon")
        self.epsilon = epsilon
        self.gamma = None if gamma is None else _arguments.real_number("gamma", gamma, minimum=0.0)
        linear_rule = AffineEpsilon(epsilon) if gamma is None else AffineGamma(gamma=gamma, stabilizer=epsilon)
        entries = _user_map("layer_map", layer_map) + softmax_map + [
            (Product, UniformProduct(epsilon)),
            (LayerNorm, LayerNormEpsilon(epsilon)),
            (RMSNorm, RMSNormEpsilon(epsilon)),
            (ElementwiseActivation, IdentityRule(epsilon)),
            (BatchNorm, AffineEpsilon(epsilon)),
            (Affine, linear_rule),
        ]
        super().__init__(entries, canonizers)

    def register(self, module: torch.nn.Module) -> None:
        """Resolve ``canonizers="auto"`` for ``module``, then register as any composite; warn about
        transformer modules the canonizers left hiding their attention from the rules."""
        super().register(module)
        left = uncanonized_modules(module)
        if left:
            names = ", ".join(f"{name or type(module).__name__} ({entry})" for name, entry in left)
            warnings.warn(
                f"these modules are not canonized, so their attention gets no rules: {names}. "
                'Use canonizers="auto" or add their canonizers.',
                stacklevel=2,
            )


@register_composite("attn_lrp")
class AttnLRP(_TransformerComposite):
    """AttnLRP (Achtibat et al., ICML 2024) for transformers, in the gradient x input view.

    Rules (``gradient_view = True``: the backward pass carries modified gradients ``g``; relevance is
    ``input * g``, with the plain ``context`` API ``x * x.grad``):

    - linear and convolution layers (patch embedding included), Hugging Face ``Conv1D``:
      LRP-epsilon, :class:`~lrp_lightning.transformer.gradient_rules.AffineEpsilon`; with ``gamma``, LRP-gamma
      (:class:`~lrp_lightning.transformer.gradient_rules.AffineGamma`) instead; BatchNorm: LRP-epsilon;
    - element-wise non-linearities: identity rule ``R_x = R_y``
      (:class:`~lrp_lightning.transformer.gradient_rules.IdentityRule`);
    - LayerNorm / RMSNorm: LRP-epsilon with the standard deviation (root mean square) held constant;
    - :class:`~lrp_lightning.layer.MatMul` / :class:`~lrp_lightning.layer.Mul` products: uniform
      rule, each variable factor gets its share (:class:`~lrp_lightning.transformer.gradient_rules.UniformProduct`);
    - softmax: ``R_x = x * (R_s - s * sum_j R_s_j)``. With ``R_s = s * g_s`` this is
      ``x * J^T g_s``, the plain gradient of the softmax times its input, so the softmax needs no
      hook in this view. The rule drops the softmax's bias term, which is why AttnLRP does not
      conserve relevance exactly;
    - fused attention (:class:`~lrp_lightning.layer.ScaledDotProductAttention`, models running
      PyTorch's SDPA kernel): the three rules above through the kernel's own backward pass, ``V``
      getting half and ``Q``, ``K`` a quarter of its gradient for ``g_O * O / stab(O)``
      (:class:`~lrp_lightning.transformer.gradient_rules.UniformAttention`); the kernel never forms ``Q K^T``,
      so its ratio ``S / stab(S)`` (different from 1 only where ``|S|`` is of the order of
      epsilon) is not applied there, as in LXT;
    - reshapes, scalings, residual additions, additive masks, rotary embeddings, pooling: the plain
      gradient (LRP-0 for linear maps without bias).

    Parameters
    ----------
    epsilon : float or callable
        Stabilizer of every rule.
    gamma : float, optional
        None: LRP-epsilon on linear and convolution layers; a float: LRP-gamma there.
    layer_map : list of (tuple of types, Hook), optional
        Prepended to the composite's own map.
    canonizers : "auto", None or list of Canonizer
        ``"auto"``: the canonizers of every supported transformer module found in the model (see
        :mod:`lrp_lightning.auto_canonizers`); None or a list replaces them.
    """

    def __init__(self, epsilon=1e-6, gamma: Optional[float] = None, layer_map: Optional[LayerMap] = None, canonizers="auto") -> None:
        super().__init__(epsilon, gamma, layer_map, canonizers, [(ScaledDotProductAttention, UniformAttention(epsilon))])


@register_composite("cp_lrp")
class CPLRP(_TransformerComposite):
    """CP-LRP (Ali et al., ICML 2022): AttnLRP with the attention weights held constant.

    As :class:`AttnLRP`, except that ``nn.Softmax`` modules (the attention weights, made explicit by
    the canonizers) are detached (:class:`~lrp_lightning.transformer.gradient_rules.ConstantAttention`): no
    relevance flows into queries and keys, and attention is linear in the values, whose product
    with the weights passes relevance to the values whole; fused attention gets the same rules
    through its kernel (:class:`~lrp_lightning.transformer.gradient_rules.ConstantAttentionWeights`). With epsilon -> 0 and no biases,
    relevance is conserved. The gates of gated MLPs (:class:`~lrp_lightning.layer.GatedMul`) are held
    constant likewise (:class:`~lrp_lightning.transformer.gradient_rules.ConstantGate`), as in LXT's CP-LRP. A
    softmax output layer of a classifier would be detached as well: give such a model a
    ``layer_map`` entry for it.

    Parameters
    ----------
    epsilon : float or callable
        Stabilizer of every rule.
    gamma : float, optional
        None: LRP-epsilon on linear and convolution layers; a float: LRP-gamma there.
    layer_map : list of (tuple of types, Hook), optional
        Prepended to the composite's own map.
    canonizers : "auto", None or list of Canonizer
        As for :class:`AttnLRP`.
    """

    def __init__(self, epsilon=1e-6, gamma: Optional[float] = None, layer_map: Optional[LayerMap] = None, canonizers="auto") -> None:
        super().__init__(
            epsilon,
            gamma,
            layer_map,
            canonizers,
            [
                (torch.nn.Softmax, ConstantAttention()),
                (ScaledDotProductAttention, ConstantAttentionWeights(epsilon)),
                (GatedMul, ConstantGate(epsilon)),
            ],
        )
