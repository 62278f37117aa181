"""lrp_lightning's composites give zennit 0.5.1's numbers (zennit called as a black-box oracle)."""
import warnings

import pytest
import torch

zennit_composites = pytest.importorskip("zennit.composites")
zennit_canonizers = pytest.importorskip("zennit.canonizers")
zennit_rules = pytest.importorskip("zennit.rules")
zennit_torchvision = pytest.importorskip("zennit.torchvision")
zennit_types = pytest.importorskip("zennit.types")

from lrp_lightning import canonizers, composites, rules, torchvision as lrp_torchvision  # noqa: E402
from lrp_lightning.core import fast_path  # noqa: E402
from lrp_lightning.types import Convolution  # noqa: E402


RTOL = 1e-5
LRP_NAMES = [
    "epsilon_gamma_box",
    "epsilon_plus",
    "epsilon_plus_flat",
    "epsilon_alpha2_beta1",
    "epsilon_alpha2_beta1_flat",
    "excitation_backprop",
]
ALL_NAMES = LRP_NAMES + ["deconvnet", "guided_backprop", "beta_smooth"]


pytestmark = pytest.mark.usefixtures("float64_default")


def assert_close(expected: torch.Tensor, actual: torch.Tensor, rtol: float = RTOL) -> None:
    scale = expected.abs().max()
    assert scale > 0
    error = ((expected - actual).abs().max() / scale).item()
    assert error < rtol, f"relative max error {error:.3e}"


def composite_kwargs(name: str, input: torch.Tensor) -> dict:
    if name == "epsilon_gamma_box":
        low = input.amin(dim=(0, *range(2, input.dim())), keepdim=True).expand_as(input) - 0.5
        high = input.amax(dim=(0, *range(2, input.dim())), keepdim=True).expand_as(input) + 0.5
        return {"low": low.contiguous(), "high": high.contiguous()}
    return {}


def both(name, zennit_canonizer, our_canonizer, input, zero_params=None):
    kwargs = composite_kwargs(name, input)
    if zero_params is not None:
        kwargs["zero_params"] = zero_params
    theirs = zennit_composites.COMPOSITES[name](canonizers=zennit_canonizer, **kwargs)
    ours = composites.COMPOSITES[name](canonizers=our_canonizer, **kwargs)
    return theirs, ours


MODELS = {
    "cnn_bn": ("cnn_with_batch_norm", (3, 12, 12), lambda: [zennit_canonizers.SequentialMergeBatchNorm()],
               lambda: [canonizers.SequentialMergeBatchNorm()]),
    "mlp": ("mlp", (10,), lambda: [], lambda: []),
    "conv1d": ("conv1d_net", (2, 20), lambda: [], lambda: []),
}


@pytest.mark.parametrize("fast", [True, False], ids=["closed_form", "generic"])
@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_registered_composites_match_zennit(request, model_name, name, fast, attribute):
    model_fixture, shape, zennit_canonizer, our_canonizer = MODELS[model_name]
    build = request.getfixturevalue(model_fixture)
    torch.manual_seed(0)
    # zennit applies BetaSmooth to the already-overwritten input of in-place ReLUs; compare without them
    model = build(inplace=False) if model_name == "cnn_bn" else build()
    input = torch.randn(3, *shape)
    target = torch.tensor([0, 2, 1])
    theirs, ours = both(name, zennit_canonizer(), our_canonizer(), input)
    expected = attribute(theirs, model, input, target)
    with fast_path(fast), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        actual = attribute(ours, model, input, target)
    assert_close(expected, actual)


TORCHVISION = {
    "vgg11_bn": ("small_vgg_bn", zennit_torchvision.VGGCanonizer, lrp_torchvision.VGGCanonizer),
    "resnet18": ("resnet18", zennit_torchvision.ResNetCanonizer, lrp_torchvision.ResNetCanonizer),
    "resnet_bottleneck": ("resnet_bottleneck", zennit_torchvision.ResNetCanonizer, lrp_torchvision.ResNetCanonizer),
}


@pytest.mark.parametrize("name", ["epsilon_gamma_box", "epsilon_plus_flat", "epsilon_alpha2_beta1", "guided_backprop"])
@pytest.mark.parametrize("model_name", sorted(TORCHVISION))
def test_torchvision_models_with_canonizers_match_zennit(request, model_name, name, attribute):
    model_fixture, zennit_canonizer, our_canonizer = TORCHVISION[model_name]
    build = request.getfixturevalue(model_fixture)
    torch.manual_seed(0)
    model = build()
    input = torch.rand(2, 3, 32, 32)
    target = torch.tensor([1, 3])
    theirs, ours = both(name, [zennit_canonizer()], [our_canonizer()], input)
    assert_close(attribute(theirs, model, input, target), attribute(ours, model, input, target))


@pytest.mark.parametrize("name", LRP_NAMES)
def test_zero_params_bias_matches_zennit(name, attribute, cnn_with_batch_norm):
    torch.manual_seed(1)
    model = cnn_with_batch_norm()
    input = torch.randn(3, 3, 12, 12)
    target = torch.tensor([4, 0, 2])
    theirs, ours = both(
        name, [zennit_canonizers.SequentialMergeBatchNorm()], [canonizers.SequentialMergeBatchNorm()], input, "bias"
    )
    assert_close(attribute(theirs, model, input, target), attribute(ours, model, input, target))


def test_custom_layer_map_and_first_map_are_prepended(attribute, cnn_with_batch_norm):
    torch.manual_seed(2)
    model = cnn_with_batch_norm()
    input = torch.randn(2, 3, 12, 12)
    target = torch.tensor([1, 2])
    low, high = -4 * torch.ones_like(input), 4 * torch.ones_like(input)
    theirs = zennit_composites.EpsilonGammaBox(
        low,
        high,
        layer_map=[(torch.nn.Linear, zennit_rules.Epsilon(epsilon=0.5))],
        first_map=[(torch.nn.Conv2d, zennit_rules.Flat())],
        canonizers=[zennit_canonizers.SequentialMergeBatchNorm()],
    )
    ours = composites.EpsilonGammaBox(
        low,
        high,
        layer_map=[(torch.nn.Linear, rules.Epsilon(epsilon=0.5))],
        first_map=[(torch.nn.Conv2d, rules.Flat())],
        canonizers=[canonizers.SequentialMergeBatchNorm()],
    )
    assert_close(attribute(theirs, model, input, target), attribute(ours, model, input, target))
    with ours.context(model):
        assert isinstance(ours.rule_map["0"], rules.Flat)
        assert isinstance(ours.rule_map["11"], rules.Epsilon) and ours.rule_map["11"].epsilon == 0.5


def test_name_map_composite_matches_zennit(attribute, mlp):
    torch.manual_seed(3)
    model = mlp()
    input = torch.randn(4, 10)
    target = torch.tensor([0, 1, 2, 3])
    theirs = zennit_composites.NameMapComposite(
        [(("0",), zennit_rules.ZPlus()), (("2", "4"), zennit_rules.Epsilon(0.1)), (("1", "3"), zennit_rules.Pass())]
    )
    ours = composites.NameMapComposite([(("0",), rules.ZPlus()), (("2", "4"), rules.Epsilon(0.1)), (("1", "3"), rules.Pass())])
    assert_close(attribute(theirs, model, input, target), attribute(ours, model, input, target))


def test_mixed_and_name_layer_map_composites_match_zennit(attribute, conv1d_net):
    torch.manual_seed(4)
    model = conv1d_net()
    input = torch.randn(3, 2, 20)
    target = torch.tensor([0, 1, 2])
    theirs = zennit_composites.MixedComposite(
        [
            zennit_composites.NameMapComposite([(("0",), zennit_rules.WSquare())]),
            zennit_composites.LayerMapComposite(
                zennit_composites.layer_map_base() + [(zennit_types.Convolution, zennit_rules.Gamma(0.5)),
                                                      (torch.nn.Linear, zennit_rules.Epsilon())]
            ),
        ]
    )
    ours = composites.MixedComposite(
        [
            composites.NameMapComposite([(("0",), rules.WSquare())]),
            composites.LayerMapComposite(
                composites.layer_map_base() + [(Convolution, rules.Gamma(0.5)), (torch.nn.Linear, rules.Epsilon())]
            ),
        ]
    )
    expected = attribute(theirs, model, input, target)
    assert_close(expected, attribute(ours, model, input, target))
    ours_named = composites.NameLayerMapComposite(
        name_map=[(("0",), rules.WSquare())],
        layer_map=composites.layer_map_base() + [(Convolution, rules.Gamma(0.5)), (torch.nn.Linear, rules.Epsilon())],
    )
    assert_close(expected, attribute(ours_named, model, input, target))


@pytest.mark.parametrize(
    "rule_name, args",
    [("Epsilon", ()), ("ZPlus", ()), ("AlphaBeta", (2.0, 1.0)), ("AlphaBeta", (1.0, 0.0)), ("Gamma", (0.3,)),
     ("Flat", ()), ("WSquare", ())],
)
@pytest.mark.parametrize("zero_params", [None, "bias"])
def test_single_rules_match_zennit_on_convolutions(rule_name, args, zero_params, attribute):
    torch.manual_seed(5)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 5, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(5, 4, 3, stride=2),
        torch.nn.Flatten(), torch.nn.Linear(36, 3),
    ).eval()
    input = torch.randn(2, 3, 8, 8)
    target = torch.tensor([0, 2])
    theirs = zennit_composites.LayerMapComposite(
        [(torch.nn.ReLU, zennit_rules.Pass()), (zennit_types.Linear, getattr(zennit_rules, rule_name)(*args, zero_params=zero_params))]
    )
    ours = composites.LayerMapComposite(
        [(torch.nn.ReLU, rules.Pass()), (torch.nn.Conv2d, getattr(rules, rule_name)(*args, zero_params=zero_params)),
         (torch.nn.Linear, getattr(rules, rule_name)(*args, zero_params=zero_params))]
    )
    assert_close(attribute(theirs, model, input, target), attribute(ours, model, input, target))
