"""The one registry behind ``canonizers="auto"`` (``lrp_lightning.auto_canonizers``), as every composite
and the callbacks use it: ``"auto"`` gives bitwise the relevance of the canonizers a user would name
(torchvision ResNet18 and VGG16, a custom Conv-BN model, transformers), a user-registered entry is
picked up by the engine and the callback alike, and a wrong string is rejected by one check."""
import inspect

import pytest
import torch

from lrp_lightning import auto_canonizers as registry
from lrp_lightning.attribution import Gradient
from lrp_lightning.callbacks.explainers import build_explainer
from lrp_lightning.canonizers import AttributeCanonizer, SequentialMergeBatchNorm
from lrp_lightning.composites import (
    COMPOSITES,
    AttnLRP,
    CPLRP,
    EpsilonGammaBox,
    EpsilonPlus,
    LayerMapComposite,
    MixedComposite,
    NameLayerMapComposite,
    NameMapComposite,
    SpecialFirstLayerMapComposite,
)
from lrp_lightning.rules import Epsilon, Pass
from lrp_lightning.transformer.attention import MultiheadAttentionCanonizer

GENERIC = {
    LayerMapComposite: lambda canonizers: LayerMapComposite([(torch.nn.Linear, Epsilon())], canonizers=canonizers),
    SpecialFirstLayerMapComposite: lambda canonizers: SpecialFirstLayerMapComposite(
        [(torch.nn.Linear, Epsilon())], [(torch.nn.Conv2d, Epsilon())], canonizers=canonizers),
    NameMapComposite: lambda canonizers: NameMapComposite([(("0",), Epsilon())], canonizers=canonizers),
    MixedComposite: lambda canonizers: MixedComposite([NameMapComposite([])], canonizers=canonizers),
    NameLayerMapComposite: lambda canonizers: NameLayerMapComposite(canonizers=canonizers),
}


def box(canonizers):
    return EpsilonGammaBox(low=-3.0, high=3.0, canonizers=canonizers)


def relevance(model, composite, x, target):
    with Gradient(model, composite) as attributor:
        _, result = attributor(x, torch.eye(model(x).shape[1])[target])
    return result


def resolved(composite, model):
    """The canonizer types the composite applies to ``model`` (read while registered)."""
    with composite.context(model):
        return [type(canonizer) for canonizer in composite.canonizers]


@pytest.fixture
def vgg16(randomize_batch_norms):
    """Call for a torchvision VGG16-BN (5 classes) with randomised BatchNorms."""

    def build():
        vgg16_bn = pytest.importorskip("torchvision.models").vgg16_bn
        torch.manual_seed(1)
        return randomize_batch_norms(vgg16_bn(num_classes=5)).eval()

    return build


@pytest.mark.parametrize("model_fixture, explicit, shape", [
    ("resnet18", lambda: [pytest.importorskip("lrp_lightning.torchvision").ResNetCanonizer()], (2, 3, 32, 32)),
    ("vgg16", lambda: [pytest.importorskip("lrp_lightning.torchvision").VGGCanonizer()], (1, 3, 32, 32)),
    ("cnn_with_batch_norm", lambda: [SequentialMergeBatchNorm()], (2, 3, 12, 12)),
], ids=["resnet18", "vgg16_bn", "conv_bn"])
def test_epsilon_gamma_box_auto_equals_the_explicit_canonizers_bitwise(request, model_fixture, explicit, shape):
    torch.manual_seed(0)
    model = request.getfixturevalue(model_fixture)()
    x = torch.rand(shape) * 2 - 1
    target = torch.tensor([1, 3][: shape[0]])
    automatic = relevance(model, box("auto"), x, target)
    assert torch.equal(automatic, relevance(model, box(explicit()), x, target))
    # the canonizers matter here: without them the relevance differs
    assert not torch.equal(automatic, relevance(model, box(None), x, target))
    assert resolved(box("auto"), model) == [type(c) for c in explicit()]


def tiny_vit():
    vision_transformer = pytest.importorskip("torchvision.models.vision_transformer")
    torch.manual_seed(0)
    model = vision_transformer.VisionTransformer(
        image_size=8, patch_size=4, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16, num_classes=3)
    for parameter in model.parameters():
        parameter.data.normal_(0, 0.5)
    return model.eval()


@pytest.mark.parametrize("composite", [AttnLRP, CPLRP])
def test_transformer_composites_auto_is_what_it_was(composite):
    """The transformer entries alone match a ViT (no BatchNorm merge, no torchvision CNN entry): ``"auto"``
    equals the explicit ``nn.MultiheadAttention`` canonizer, as before the registry was shared."""
    model = tiny_vit()
    x = torch.randn(2, 3, 8, 8)
    target = torch.tensor([0, 2])
    assert inspect.signature(composite).parameters["canonizers"].default == "auto"
    assert resolved(composite(), model) == [MultiheadAttentionCanonizer]
    assert torch.equal(relevance(model, composite(), x, target),
                       relevance(model, composite(canonizers=[MultiheadAttentionCanonizer()]), x, target))


def test_attn_lrp_auto_on_a_hugging_face_model_is_its_three_canonizers(tiny_language_model, token_relevance):
    pytest.importorskip("transformers")

    from lrp_lightning.transformer.huggingface import GatedMLPCanonizer, HuggingFaceAttentionCanonizer, RMSNormCanonizer

    model = tiny_language_model("llama")
    inputs = {"input_ids": torch.randint(0, 48, (2, 6), generator=torch.Generator().manual_seed(0))}
    target = torch.tensor([3, 7])
    explicit = [HuggingFaceAttentionCanonizer(), GatedMLPCanonizer(), RMSNormCanonizer()]
    assert sorted(map(str, resolved(AttnLRP(), model))) == sorted(str(type(c)) for c in explicit)
    _, automatic, _ = token_relevance(model, AttnLRP(), inputs, target, True)
    _, named, _ = token_relevance(model, AttnLRP(canonizers=explicit), inputs, target, True)
    assert torch.equal(automatic, named)


def test_zennit_defaults_stay_and_auto_is_opt_in(cnn_with_batch_norm):
    for name, cls in COMPOSITES.items():
        default = inspect.signature(cls).parameters["canonizers"].default
        assert default == ("auto" if name in ("attn_lrp", "cp_lrp") else None), name
    for cls in GENERIC:
        assert inspect.signature(cls).parameters["canonizers"].default is None
    model = cnn_with_batch_norm()
    assert resolved(EpsilonPlus(), model) == []


@pytest.mark.parametrize("make", [*GENERIC.values(), *[
    (lambda cls: lambda canonizers: cls(low=-1.0, high=1.0, canonizers=canonizers) if cls is EpsilonGammaBox
     else cls(canonizers=canonizers))(cls) for cls in COMPOSITES.values()
]], ids=[cls.__name__ for cls in GENERIC] + list(COMPOSITES))
def test_every_composite_accepts_auto_and_rejects_another_string(make, cnn_with_batch_norm):
    model = cnn_with_batch_norm()
    assert resolved(make("auto"), model) == [SequentialMergeBatchNorm]
    with pytest.raises(ValueError, match='canonizers must be "auto", None or a list of canonizers'):
        make("torchvision")


class Marker(torch.nn.Module):
    def forward(self, x):
        return x * 2


class MarkerCanonizer(AttributeCanonizer):
    """Replaces a Marker's forward by the identity (an observable change)."""

    def __init__(self):
        super().__init__(lambda name, module: {"forward": lambda x: x} if isinstance(module, Marker) else None)


@pytest.fixture
def marker_entry():
    registry.register_auto_canonizer("test marker", lambda module: isinstance(module, Marker), MarkerCanonizer)
    yield
    del registry._REGISTRY["test marker"]


def test_a_user_registered_entry_is_picked_up_by_every_composite_and_the_callback(marker_entry):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), Marker(), torch.nn.Linear(4, 3))
    x = torch.randn(2, 4)
    for make in [lambda c: EpsilonPlus(canonizers=c), lambda c: AttnLRP(canonizers=c), *GENERIC.values()]:
        assert resolved(make("auto"), model) == [MarkerCanonizer]
    with EpsilonPlus(canonizers="auto").context(model):
        assert torch.equal(model[1](x), x)
    assert torch.equal(model[1](x), 2 * x)
    explainer = build_explainer("lrp", "epsilon_plus", model, x, canonizers="auto")
    assert [type(c) for c in explainer.composite.canonizers] == [MarkerCanonizer]
    registry.register_auto_canonizer("test marker covers", lambda module: isinstance(module, Marker), Pass,
                                     covers=("test marker",))
    try:
        assert [type(c) for c in registry.auto_canonizers(model)] == [Pass]
    finally:
        del registry._REGISTRY["test marker covers"]
    with pytest.raises(ValueError, match="scope must be one of"):
        registry.register_auto_canonizer("bad", bool, Pass, scope="layer")


def models_for_resolution(cnn_with_batch_norm):
    tvm = pytest.importorskip("torchvision.models")
    with torch.device("meta"):  # only the architecture matters here
        resnet, vgg = tvm.resnet18(), tvm.vgg11_bn()
    plain = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU(), torch.nn.BatchNorm1d(3))
    return {"resnet18": resnet, "vgg11_bn": vgg, "conv_bn": cnn_with_batch_norm(), "plain": plain, "vit": tiny_vit()}


@pytest.mark.parametrize("name", ["epsilon_gamma_box", "epsilon_plus", "attn_lrp"])
def test_the_callback_and_the_engine_resolve_the_same_canonizers(name, cnn_with_batch_norm):
    expected = {"resnet18": ["ResNetCanonizer"], "vgg11_bn": ["VGGCanonizer"], "conv_bn": ["SequentialMergeBatchNorm"],
                "plain": [], "vit": ["MultiheadAttentionCanonizer"]}
    kwargs = {"low": -1.0, "high": 1.0} if name == "epsilon_gamma_box" else {}
    for model_name, model in models_for_resolution(cnn_with_batch_norm).items():
        samples = torch.zeros(1, 3) if model_name == "plain" else torch.zeros(1, 3, 8, 8)
        explainer = build_explainer("lrp", name, model, samples, low=-1.0, high=1.0, canonizers="auto")
        from_callback = [type(c).__name__ for c in explainer.composite.canonizers]
        from_engine = [cls.__name__ for cls in resolved(COMPOSITES[name](canonizers="auto", **kwargs), model)]
        assert from_callback == from_engine == expected[model_name], (name, model_name)
