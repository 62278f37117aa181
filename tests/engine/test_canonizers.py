"""The canonizers (lrp_lightning.canonizers, lrp_lightning.torchvision): the canonized forward equals the
original one and is undone exactly; BatchNorm merging by order and by name."""
import pytest
import torch

from lrp_lightning import canonizers
from lrp_lightning.torchvision import ResNetCanonizer, VGGCanonizer

pytestmark = pytest.mark.usefixtures("float64_default")


@pytest.mark.parametrize(
    "model_fixture, canonizer, shape",
    [
        ("cnn_with_batch_norm", canonizers.SequentialMergeBatchNorm, (3, 12, 12)),
        ("small_vgg_bn", VGGCanonizer, (3, 32, 32)),
        ("resnet18", ResNetCanonizer, (3, 32, 32)),
    ],
)
def test_canonized_forward_equals_original_and_is_undone_exactly(
    request, model_fixture, canonizer, shape, assert_same_state, model_state, randomize_batch_norms
):
    torch.manual_seed(2)
    model = randomize_batch_norms(request.getfixturevalue(model_fixture)(), eps=1e-5)
    input = torch.randn(2, *shape)
    before = model_state(model)
    expected = model(input)
    instances = canonizer().apply(model)
    assert instances
    canonized = model(input)
    for instance in reversed(instances):
        instance.remove()
    torch.testing.assert_close(canonized, expected, rtol=1e-12, atol=1e-12)
    assert_same_state(before, model_state(model))
    assert torch.equal(model(input), expected)


def test_merge_batch_norm_works_with_default_eps_and_bias_free_convolution(randomize_batch_norms):
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False), torch.nn.BatchNorm2d(4)).eval()
    randomize_batch_norms(model, eps=1e-5)
    input = torch.randn(2, 3, 6, 6)
    expected = model(input)
    instances = canonizers.SequentialMergeBatchNorm().apply(model)
    assert model[0].bias is not None
    torch.testing.assert_close(model(input), expected, rtol=1e-12, atol=1e-12)
    for instance in instances:
        instance.remove()
    assert model[0].bias is None and "forward" not in model[1].__dict__


def test_named_merge_batch_norm_and_unknown_names(cnn_with_batch_norm):
    model = cnn_with_batch_norm()
    input = torch.randn(2, 3, 12, 12)
    expected = model(input)
    instances = canonizers.NamedMergeBatchNorm([(("0",), "1"), (("6",), "7")]).apply(model)
    assert len(instances) == 2
    torch.testing.assert_close(model(input), expected, rtol=1e-12, atol=1e-12)
    for instance in instances:
        instance.remove()
    with pytest.raises(KeyError, match="nope"):
        canonizers.NamedMergeBatchNorm([(("nope",), "1")]).apply(model)
