"""Property-based tests (Hypothesis) of the engine and of every public constructor.

Random small architectures — Linear, Conv1d or Conv2d layers, BatchNorm, average/max pooling, ReLU
(also in-place) and other activations, residual sums, a layer called twice — under every registered
composite with and without a BatchNorm-merging canonizer: the model is restored bitwise, the closed
form equals the generic autograd path, the relevance is finite; rules that conserve do so on bias-free
ReLU nets. Every public constructor fed a bad argument raises ``ValueError``/``TypeError``/``KeyError``
naming it. Examples are bounded (``max_examples``, no deadline) to keep the file fast.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from lrp_lightning import attribution, canonizers, composites, core, layer, metrics, rules
from lrp_lightning.callbacks import AttributionCallback
from lrp_lightning.composites import COMPOSITES, get_composite, layer_map_base
from lrp_lightning.core import fast_path
from lrp_lightning.types import Convolution


pytestmark = pytest.mark.usefixtures("float64_default")
# derandomized: the same examples on every run, so CI cannot fail by chance
BOUNDED = settings(max_examples=12, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])
CLASSES = 3
SHAPES = {"dense": (), "conv1d": (8,), "conv2d": (6, 6)}
ACTIVATIONS = {
    "relu": lambda: nn.ReLU(),
    "relu_inplace": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
    "elu": lambda: nn.ELU(),
    "tanh": lambda: nn.Tanh(),
    "silu": lambda: nn.SiLU(),
}


def linear_layer(kind: str, channels_in: int, channels_out: int, bias: bool) -> nn.Module:
    if kind == "dense":
        return nn.Linear(channels_in, channels_out, bias=bias)
    conv = nn.Conv1d if kind == "conv1d" else nn.Conv2d
    return conv(channels_in, channels_out, 3, padding=1, bias=bias)


def batch_norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "conv2d" else nn.BatchNorm1d(channels)


class Residual(nn.Module):
    """``x + body(x)`` with the addition as an explicit :class:`~lrp_lightning.layer.Sum`."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body, self.sum = body, layer.Sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sum(torch.stack([x, self.body(x)], dim=-1))


class Twice(nn.Module):
    """The same layer (and activation) applied twice: ``act(f(act(f(x))))``."""

    def __init__(self, inner: nn.Module, activation: nn.Module) -> None:
        super().__init__()
        self.inner, self.activation = inner, activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.inner(self.activation(self.inner(x))))


@st.composite
def architectures(draw, relu_only: bool = False, bias: bool = True, norms: bool = True):
    """(model in eval mode, input batch): a first layer, then up to three random blocks, then a head."""
    kind = draw(st.sampled_from(sorted(SHAPES)))
    activations = ["relu", "relu_inplace"] if relu_only else sorted(ACTIVATIONS)
    width = draw(st.integers(2, 4))
    channels_in = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    modules = [linear_layer(kind, channels_in, width, bias)]
    if norms and draw(st.booleans()):
        modules.append(batch_norm(kind, width))
    modules.append(ACTIVATIONS[draw(st.sampled_from(activations))]())
    spatial = list(SHAPES[kind])
    for block in draw(st.lists(st.sampled_from(["layer", "residual", "twice", "pool"]), max_size=3)):
        activation = ACTIVATIONS[draw(st.sampled_from(activations))]
        if block == "layer":
            modules += [linear_layer(kind, width, width, bias), activation()]
        elif block == "residual":
            modules.append(Residual(nn.Sequential(linear_layer(kind, width, width, bias), activation())))
        elif block == "twice":
            modules.append(Twice(linear_layer(kind, width, width, bias), activation()))
        elif kind != "dense" and min(spatial) >= 2:
            pool = draw(st.sampled_from(["avg", "max"]))
            modules.append({"avg": nn.AvgPool1d, "max": nn.MaxPool1d}[pool](2) if kind == "conv1d"
                           else {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}[pool](2))
            spatial = [side // 2 for side in spatial]
    modules += [nn.Flatten(), nn.Linear(width * math.prod(spatial), CLASSES, bias=bias)]
    model = nn.Sequential(*modules)
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(0.3 * torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(module.num_features, generator=generator))
            module.weight.data.copy_(0.5 + torch.rand(module.num_features, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(module.num_features, generator=generator))
    inputs = torch.randn(2, channels_in, *SHAPES[kind], generator=generator)
    return model.eval(), inputs


def build_composite(name: str, inputs: torch.Tensor, merge_batch_norm: bool) -> core.Composite:
    kwargs = {"canonizers": [canonizers.SequentialMergeBatchNorm()] if merge_batch_norm else None}
    if name == "epsilon_gamma_box":
        kwargs.update(low=inputs.amin(dim=0, keepdim=True), high=inputs.amax(dim=0, keepdim=True))
    return get_composite(name)(**kwargs)


@BOUNDED
@given(architecture=architectures(), merge_batch_norm=st.booleans())
def test_every_composite_restores_the_model_bitwise_and_both_paths_agree_on_finite_relevance(
    architecture, merge_batch_norm, assert_same_state, attribute, model_state
):
    model, inputs = architecture
    target = torch.tensor([0, 2])
    before = model_state(model)
    with torch.no_grad():
        plain_output = model(inputs)
    for name in sorted(COMPOSITES):
        with fast_path(True):
            fused = attribute(build_composite(name, inputs, merge_batch_norm), model, inputs, target)
        with fast_path(False):
            generic = attribute(build_composite(name, inputs, merge_batch_norm), model, inputs, target)
        assert fused.shape == inputs.shape, name
        assert torch.isfinite(fused).all() and torch.isfinite(generic).all(), name
        scale = generic.abs().max().item()
        torch.testing.assert_close(fused, generic, rtol=1e-6, atol=1e-9 * max(scale, 1e-30), msg=name)
        assert_same_state(before, model_state(model))
    with torch.no_grad():
        assert torch.equal(model(inputs), plain_output)


CONSERVING_RULES = {
    "epsilon": lambda: rules.Epsilon(1e-12),
    "zplus": lambda: rules.ZPlus(1e-12),
    "gamma": lambda: rules.Gamma(0.25, 1e-12),
}


@BOUNDED
@given(architecture=architectures(relu_only=True, bias=False, norms=False), rule=st.sampled_from(sorted(CONSERVING_RULES)))
def test_conservative_rules_conserve_relevance_on_bias_free_relu_nets(architecture, rule, attribute):
    model, inputs = architecture
    with torch.no_grad():
        logits = model(inputs)
    target = logits.argmax(dim=1)
    # a predicted logit of ~0 (all units dead) carries no relevance to conserve
    assume(bool((logits.gather(1, target[:, None]) > 1e-6).all()))
    composite = composites.LayerMapComposite(
        layer_map_base(1e-12) + [((nn.Linear, Convolution), CONSERVING_RULES[rule]())]
    )
    relevance = attribute(composite, model, inputs, target)
    torch.testing.assert_close(relevance.flatten(1).sum(dim=1), torch.ones(2), rtol=1e-6, atol=0)


# --- every public constructor: bad arguments raise an error naming them ------------------------

NOT_A_NUMBER = st.one_of(st.text(max_size=3), st.booleans(), st.just(float("nan")), st.just(float("inf")),
                         st.lists(st.integers(), max_size=2), st.just(object()), st.just(1 + 2j))
NEGATIVE = st.floats(max_value=-1e-3, allow_nan=False, allow_infinity=False)
NOT_A_POSITIVE_INT = st.one_of(st.integers(max_value=0), st.floats(0.5, 9.5), st.text(max_size=3), st.booleans(),
                               st.just(object()))
NOT_AN_INT = st.one_of(st.floats(0.5, 9.5), st.text(max_size=3), st.booleans(), st.just(object()))
NOT_A_BOOL = st.one_of(st.integers(), st.text(max_size=3), st.just(None), st.just(object()))
NOT_NAMES = st.one_of(st.integers(), st.floats(allow_nan=False), st.lists(st.integers(), min_size=1, max_size=2),
                      st.just(object()), st.just({"a": 1}))
NOT_A_RULE_MAP = st.one_of(st.integers(), st.text(min_size=1, max_size=3), st.just([1]), st.just([(nn.Linear, 3)]),
                           st.just([(1, rules.Pass())]), st.just([(nn.Linear,)]), st.just(object()))
NOT_CANONIZERS = st.one_of(st.integers(), st.text(min_size=1, max_size=3), st.just([1]), st.just([object()]),
                           st.just(object()))
NOT_CALLABLE = st.one_of(st.integers(), st.text(max_size=3), st.just([1]))
NOT_A_TENSOR = st.one_of(st.text(min_size=1, max_size=3), st.just({"a": 1}), st.just(object()), st.just(1 + 2j),
                         st.booleans(), st.just([1, "a"]))
NOT_A_STABILIZER = st.one_of(st.text(max_size=3), st.booleans(), st.just(float("nan")), NEGATIVE,
                             st.just([1.0]), st.just(object()))
BOX = {"low": -1.0, "high": 1.0}
LINEAR = nn.Linear(3, 2)

# (constructor, valid keyword arguments, {argument: strategy of bad values})
CONSTRUCTORS = [
    (core.Stabilizer, {}, {"epsilon": st.one_of(NOT_A_NUMBER, NEGATIVE), "clip": NOT_A_BOOL,
                           "norm_scale": NOT_A_BOOL, "dim": st.just(["a"])}),  # an int dim is valid (zennit's)
    (core.ParamMod, {"modifier": lambda p, n: p}, {"modifier": NOT_CALLABLE, "param_keys": NOT_NAMES,
                                                   "zero_params": NOT_NAMES, "require_params": NOT_A_BOOL}),
    (core.BasicHook, {}, {"input_modifiers": NOT_CANONIZERS, "param_modifiers": NOT_CANONIZERS,
                          "output_modifiers": NOT_CANONIZERS, "gradient_mapper": NOT_CALLABLE,
                          "reducer": NOT_CALLABLE}),
    (layer.Sum, {}, {"dim": NOT_AN_INT}),
    (rules.Epsilon, {}, {"epsilon": NOT_A_STABILIZER, "zero_params": NOT_NAMES}),
    (rules.ZPlus, {}, {"stabilizer": NOT_A_STABILIZER, "zero_params": NOT_NAMES}),
    (rules.AlphaBeta, {}, {"alpha": st.one_of(NOT_A_NUMBER, NEGATIVE, st.floats(3.5, 9)),
                           "beta": st.one_of(NOT_A_NUMBER, NEGATIVE, st.floats(1.5, 9)),
                           "stabilizer": NOT_A_STABILIZER, "zero_params": NOT_NAMES}),
    (rules.Gamma, {}, {"gamma": st.one_of(NOT_A_NUMBER, NEGATIVE), "stabilizer": NOT_A_STABILIZER,
                       "zero_params": NOT_NAMES}),
    (rules.ZBox, BOX, {"low": NOT_A_TENSOR, "high": NOT_A_TENSOR, "stabilizer": NOT_A_STABILIZER,
                       "zero_params": NOT_NAMES}),
    (rules.WSquare, {}, {"stabilizer": NOT_A_STABILIZER, "zero_params": NOT_NAMES}),
    (rules.Flat, {}, {"stabilizer": NOT_A_STABILIZER, "zero_params": NOT_NAMES}),
    (rules.Norm, {}, {"stabilizer": NOT_A_STABILIZER}),
    (rules.ReLUBetaSmooth, {}, {"beta_smooth": NOT_A_NUMBER}),
    (composites.LayerMapComposite, {"layer_map": []}, {"layer_map": NOT_A_RULE_MAP, "canonizers": NOT_CANONIZERS}),
    (composites.SpecialFirstLayerMapComposite, {"layer_map": [], "first_map": []},
     {"layer_map": NOT_A_RULE_MAP, "first_map": NOT_A_RULE_MAP, "canonizers": NOT_CANONIZERS}),
    (composites.NameMapComposite, {"name_map": []},
     {"name_map": st.one_of(st.integers(), st.just([("a", 1)]), st.just([(1, rules.Pass())]), st.just(["ab"])),
      "canonizers": NOT_CANONIZERS}),
    (composites.MixedComposite, {"composites": []}, {"composites": NOT_CANONIZERS, "canonizers": NOT_CANONIZERS}),
    (composites.NameLayerMapComposite, {}, {"name_map": st.just([("a", 1)]), "layer_map": NOT_A_RULE_MAP,
                                           "canonizers": NOT_CANONIZERS}),
    (canonizers.NamedMergeBatchNorm, {"name_map": []},
     {"name_map": st.one_of(st.integers(), st.just([(1, "bn")]), st.just([(("a",), 2)]), st.just(["ab"]))}),
    (canonizers.AttributeCanonizer, {"attribute_map": lambda name, module: None}, {"attribute_map": NOT_CALLABLE}),
    (canonizers.CompositeCanonizer, {"canonizers": []}, {"canonizers": NOT_CANONIZERS}),
    (attribution.Gradient, {"model": LINEAR}, {"model": NOT_CALLABLE, "composite": st.one_of(st.integers(), st.text())}),
    (attribution.SmoothGrad, {"model": LINEAR}, {"noise_level": st.one_of(NOT_A_NUMBER, NEGATIVE),
                                                 "n_iter": NOT_A_POSITIVE_INT, "seed": NOT_AN_INT,
                                                 "batch_size": NOT_A_POSITIVE_INT}),
    (attribution.IntegratedGradients, {"model": LINEAR}, {"baseline": NOT_A_TENSOR, "n_iter": NOT_A_POSITIVE_INT,
                                                          "batch_size": NOT_A_POSITIVE_INT}),
    (attribution.Occlusion, {"model": LINEAR}, {"window": NOT_A_POSITIVE_INT, "stride": NOT_A_POSITIVE_INT,
                                                "fill": NOT_A_TENSOR, "batch_size": NOT_A_POSITIVE_INT}),
    (AttributionCallback, {}, {"composite": st.one_of(st.integers(), st.just(object()), st.just("no_such_composite")),
                               "num_samples": NOT_A_POSITIVE_INT, "every_n_epochs": NOT_A_POSITIVE_INT,
                               "metrics": st.one_of(st.integers(), st.just([1]), st.just(object())),
                               "samples": st.one_of(st.integers(), st.just(object()), st.just({"a": 1})),
                               "batch_to_input": NOT_CALLABLE, "module": st.one_of(st.integers(), st.just(object())),
                               "low": NOT_A_TENSOR, "high": NOT_A_TENSOR, "cmap": st.one_of(st.integers(),
                                                                                           st.just("no_such_map")),
                               "log_images": NOT_A_BOOL, "conservation": NOT_A_BOOL,
                               "on_sanity_check": NOT_A_BOOL, "on_test": NOT_A_BOOL}),
]
CONSTRUCTORS += [
    (get_composite(name), BOX if name == "epsilon_gamma_box" else {},
     {argument: strategy for argument, strategy in {
         "epsilon": NOT_A_STABILIZER, "gamma": st.one_of(NOT_A_NUMBER, NEGATIVE), "stabilizer": NOT_A_STABILIZER,
         "layer_map": NOT_A_RULE_MAP, "first_map": NOT_A_RULE_MAP, "zero_params": NOT_NAMES,
         "canonizers": NOT_CANONIZERS, "beta_smooth": NOT_A_NUMBER, "low": NOT_A_TENSOR, "high": NOT_A_TENSOR,
     }.items() if argument in get_composite(name).__init__.__code__.co_varnames})
    for name in sorted(COMPOSITES)
]
MODEL_METRIC_ARGUMENTS = {"baseline": st.one_of(st.text(min_size=1, max_size=3).filter(
    lambda text: text not in ("mean", "blur")), st.just(object())), "softmax": NOT_A_BOOL,
    "max_batch_size": NOT_A_POSITIVE_INT}
CONSTRUCTORS += [
    (metrics.RegionPerturbation, {}, {**MODEL_METRIC_ARGUMENTS, "patch_size": NOT_A_POSITIVE_INT,
                                      "steps": NOT_A_POSITIVE_INT, "order": st.text(max_size=3), "seed": NOT_AN_INT}),
    (metrics.PixelFlipping, {}, {**MODEL_METRIC_ARGUMENTS, "features_in_step": NOT_A_POSITIVE_INT,
                                 "order": st.text(max_size=3), "seed": NOT_AN_INT}),
    (metrics.Deletion, {}, {**MODEL_METRIC_ARGUMENTS, "steps": NOT_A_POSITIVE_INT}),
    (metrics.Insertion, {}, {**MODEL_METRIC_ARGUMENTS, "steps": NOT_A_POSITIVE_INT}),
    (metrics.FaithfulnessCorrelation, {}, {**MODEL_METRIC_ARGUMENTS, "nr_runs": NOT_A_POSITIVE_INT,
                                           "subset_size": NOT_A_POSITIVE_INT, "seed": NOT_AN_INT}),
]


@pytest.mark.parametrize("constructor, valid, bad", CONSTRUCTORS, ids=lambda v: getattr(v, "__name__", ""))
@settings(max_examples=8, deadline=None, derandomize=True)
@given(data=st.data())
def test_public_constructors_reject_bad_arguments_naming_them(constructor, valid, bad, data):
    argument = data.draw(st.sampled_from(sorted(bad)), label="argument")
    value = data.draw(bad[argument], label="value")
    with pytest.raises((ValueError, TypeError, KeyError)) as raised:
        constructor(**{**valid, argument: value})
    assert argument in str(raised.value), f"{constructor.__name__}({argument}={value!r}): {raised.value}"
