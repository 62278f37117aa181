"""zennit 0.5.1 as the oracle in float32, on models like the ones the callback explains.

The float64 oracle tests isolate the rules; here the conditions are realistic: float32, BatchNorm with
its default eps, LeakyReLU/ELU/Tanh/SiLU as well as ReLU, inputs of both signs, and VGG16/ResNet50
architectures (random weights, small resolution) with their canonizers — all nine composites.
"""
import warnings

import pytest
import torch
from torch import nn

zennit_composites = pytest.importorskip("zennit.composites")
zennit_canonizers = pytest.importorskip("zennit.canonizers")
zennit_torchvision = pytest.importorskip("zennit.torchvision")
torchvision_models = pytest.importorskip("torchvision.models")

from lrp_lightning import canonizers, composites  # noqa: E402
from lrp_lightning import torchvision as lrp_torchvision  # noqa: E402


# the composites zennit has (the transformer composites have their own oracle, LXT)
NAMES = sorted(set(composites.COMPOSITES) & set(zennit_composites.COMPOSITES))
# float32 rounding through a dozen layers, amplified where a stabilized denominator is small
RTOL = 2e-4
ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


def relative_error(expected: torch.Tensor, actual: torch.Tensor) -> float:
    scale = expected.abs().max()
    assert scale > 0 and torch.isfinite(expected).all()
    return ((expected - actual).abs().max() / scale).item()


def composite_pair(name: str, inputs: torch.Tensor, zennit_canonizer: list, our_canonizer: list) -> tuple:
    kwargs = {}
    if name == "epsilon_gamma_box":
        dims = (0, *range(2, inputs.dim()))
        kwargs = {"low": inputs.amin(dim=dims, keepdim=True).expand_as(inputs).contiguous(),
                  "high": inputs.amax(dim=dims, keepdim=True).expand_as(inputs).contiguous()}
    theirs = zennit_composites.COMPOSITES[name](canonizers=zennit_canonizer, **kwargs)
    ours = composites.COMPOSITES[name](canonizers=our_canonizer, **kwargs)
    return theirs, ours


def cnn(activation: str, randomize_batch_norms) -> nn.Module:
    """Conv-BN-act blocks with default BatchNorm eps, pooling and a two-layer head (3x16x16, 5 classes)."""
    act = ACTIVATIONS[activation]
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), act(),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), act(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), act(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 32), act(), nn.Linear(32, 5),
    )
    return randomize_batch_norms(model, eps=1e-5).eval()


def compare(attribute, name, model, inputs, target, zennit_canonizer, our_canonizer) -> float:
    theirs, ours = composite_pair(name, inputs, zennit_canonizer, our_canonizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = attribute(theirs, model, inputs, target)
        actual = attribute(ours, model, inputs, target)
    assert actual.dtype == torch.float32
    return relative_error(expected, actual)


CASES = [(name, activation) for name in NAMES for activation in sorted(ACTIVATIONS)]


@pytest.mark.parametrize("name, activation", CASES)
def test_float32_cnn_with_default_batch_norm_eps_and_other_activations_matches_zennit(
    name, activation, attribute, randomize_batch_norms
):
    model = cnn(activation, randomize_batch_norms)
    inputs = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 4, 2, 1])
    error = compare(attribute, name, model, inputs, target, [zennit_canonizers.SequentialMergeBatchNorm()],
                    [canonizers.SequentialMergeBatchNorm()])
    assert error < RTOL, f"relative max error {error:.2e}"


def without_inplace_relus(model: nn.Module) -> nn.Module:
    """zennit 0.5.1 applies GuidedBackprop/BetaSmooth to the already-overwritten input of in-place
    ReLUs (our hooks see the true input): compare on out-of-place ReLUs."""
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return model


def vgg16(randomize_batch_norms) -> nn.Module:
    torch.manual_seed(0)
    model = torchvision_models.vgg16_bn(num_classes=5)
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 32), nn.ReLU(), nn.Dropout(), nn.Linear(32, 5))
    return without_inplace_relus(randomize_batch_norms(model, eps=1e-5).eval())


def resnet50(randomize_batch_norms) -> nn.Module:
    torch.manual_seed(0)
    return without_inplace_relus(randomize_batch_norms(torchvision_models.resnet50(num_classes=5), eps=1e-5).eval())


TORCHVISION = {
    "vgg16_bn": (vgg16, zennit_torchvision.VGGCanonizer, lrp_torchvision.VGGCanonizer),
    "resnet50": (resnet50, zennit_torchvision.ResNetCanonizer, lrp_torchvision.ResNetCanonizer),
}


@pytest.fixture(scope="module")
def torchvision_models_built(randomize_batch_norms):
    return {name: build(randomize_batch_norms) for name, (build, _, _) in TORCHVISION.items()}


# a 50-layer float32 gradient path accumulates more rounding than the small CNN
RTOL_DEEP = 1e-3
# the full nine-composite matrix on both networks takes minutes on 2 cores: `make test-large` runs it
IN_MAKE_TEST = {("vgg16_bn", "epsilon_gamma_box"), ("resnet50", "epsilon_plus_flat")}
ZENNIT_FAILS = {
    ("resnet50", "beta_smooth"): "zennit 0.5.1 raises on a ReLU module called three times (Bottleneck.relu)",
}


def torchvision_case(model_name: str, name: str):
    marks = [] if (model_name, name) in IN_MAKE_TEST else [pytest.mark.large]
    if (model_name, name) in ZENNIT_FAILS:
        marks.append(pytest.mark.skip(reason=ZENNIT_FAILS[model_name, name]))
    return pytest.param(model_name, name, marks=marks, id=f"{model_name}-{name}")


@pytest.mark.parametrize("model_name, name", [torchvision_case(m, n) for m in sorted(TORCHVISION) for n in NAMES])
def test_float32_vgg16_and_resnet50_at_small_resolution_match_zennit(
    torchvision_models_built, model_name, name, attribute
):
    _, zennit_canonizer, our_canonizer = TORCHVISION[model_name]
    model = torchvision_models_built[model_name]
    inputs = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([1, 3])
    error = compare(attribute, name, model, inputs, target, [zennit_canonizer()], [our_canonizer()])
    assert error < RTOL_DEEP, f"relative max error {error:.2e}"
