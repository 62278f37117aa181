"""Invariants of conditional attribution: conservation over concepts, the all-concepts condition, user state
untouched, and errors that name the fix."""
import pytest
import torch

from lrp_lightning import canonizers, composites
from lrp_lightning.concepts import ChannelConcept, CondAttribution


pytestmark = pytest.mark.usefixtures("float64_default")


@pytest.fixture
def residual_setup(randomize_batch_norms, residual_cnn):
    """Call ``residual_setup()`` for the residual CNN (randomised BatchNorms), an EpsilonPlus composite merging
    its BatchNorms and three inputs."""

    def residual_setup():
        torch.manual_seed(2)
        model = randomize_batch_norms(residual_cnn()).eval()
        composite = composites.EpsilonPlus(canonizers=[canonizers.NamedMergeBatchNorm(residual_cnn.merge_pairs())])
        inputs = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
        return model, composite, inputs

    return residual_setup


@pytest.mark.parametrize("layer", ["block1.conv2", "block2.sum", "fc"])
def test_concepts_concept_relevances_sum_to_the_layer_relevance(layer, residual_setup):
    model, composite, inputs = residual_setup()
    attribution = CondAttribution(model)
    plain = attribution(inputs, [{"y": [1]}], composite, record_layer=[layer])
    channels = plain.relevances[layer].shape[1]
    per_concept = attribution(inputs[:1], [{"y": [1], layer: [c]} for c in range(channels)], composite,
                              record_layer=[layer])
    # each concept's relevance is its channel of the layer relevance, and they add up to it
    total = per_concept.relevances[layer].sum(dim=0)
    torch.testing.assert_close(total, plain.relevances[layer][0], rtol=1e-12, atol=1e-15)
    concept_relevance = ChannelConcept().attribute(plain.relevances[layer], abs_norm=False)
    torch.testing.assert_close(concept_relevance.sum(dim=1), plain.relevances[layer].flatten(1).sum(dim=1))
    # the concepts' heatmaps add up to the heatmap of all relevance that flows through the layer
    through = attribution(inputs[:1], [{"y": [1], layer: list(range(channels))}], composite)
    torch.testing.assert_close(per_concept.heatmap.sum(dim=0), through.heatmap[0], rtol=1e-10, atol=1e-15)
    if layer == "fc":  # nothing bypasses the last layer
        torch.testing.assert_close(through.heatmap, plain.heatmap[:1], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("exclude_parallel", [True, False])
def test_concepts_condition_on_all_channels_is_the_plain_attribution(exclude_parallel, cnn_with_batch_norm):
    model = cnn_with_batch_norm()
    composite = composites.EpsilonGammaBox(low=-3.0, high=3.0, canonizers=[canonizers.SequentialMergeBatchNorm()])
    inputs = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    attribution = CondAttribution(model)
    plain = attribution(inputs, {"y": [2]}, composite, record_layer=["3"])
    every = attribution(inputs, {"y": [2], "3": list(range(8)), "6": list(range(4))}, composite,
                        record_layer=["3"], exclude_parallel=exclude_parallel)
    torch.testing.assert_close(every.heatmap, plain.heatmap, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(every.relevances["3"], plain.relevances["3"], rtol=1e-12, atol=1e-15)
    # the engine's plain attribution: the same relevance at the input
    x = inputs.clone().requires_grad_(True)
    with composite.context(model):
        output = model(x)
        gradient, = torch.autograd.grad(output, x, torch.nn.functional.one_hot(torch.tensor([2, 2]), 5) * output)
    torch.testing.assert_close(plain.heatmap, gradient.sum(1), rtol=1e-12, atol=1e-15)


def test_concepts_attribution_leaves_model_and_random_state_unchanged(assert_same_state, model_state, residual_setup):
    model, composite, inputs = residual_setup()
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    before, rng = model_state(model), torch.get_rng_state()
    CondAttribution(model)(inputs, [{"y": [0], "block2.conv2": [1]}], composite, record_layer=["stem"])
    with pytest.raises(IndexError):
        CondAttribution(model)(inputs, [{"y": [0], "block2.conv2": [99]}], composite)
    assert_same_state(before, model_state(model))
    assert torch.equal(rng, torch.get_rng_state())


def test_concepts_bad_conditions_name_the_fix(residual_setup):
    model, composite, inputs = residual_setup()
    attribution = CondAttribution(model)
    with pytest.raises(ValueError, match="no layer 'block3.conv1'.*block1.conv1"):
        attribution(inputs, [{"y": [0], "block3.conv1": [1]}], composite)
    with pytest.raises(ValueError, match="no 'y'"):
        attribution(inputs, [{"block1.conv1": [1]}], composite)
    with pytest.raises(IndexError, match="out of range for a layer with 6 concepts"):
        attribution(inputs, [{"y": [0], "block1.conv1": [6]}], composite)
    with pytest.raises(ValueError, match="parallel"):
        attribution(inputs, [{"y": [0], "block2.conv2": [1], "block2.shortcut": [0]}], composite)
    with pytest.raises(ValueError, match="no layer 'nope'"):
        attribution(inputs, [{"y": [0]}], composite, record_layer=["nope"])


def test_concepts_start_layer_init_rel_and_on_device(residual_setup):
    model, composite, inputs = residual_setup()
    attribution = CondAttribution(model)
    # begun at the last layer with the relevance of class 1 there, the pass is the plain attribution of class 1
    plain = attribution(inputs, {"y": [1]}, composite, record_layer=["block2.sum"])
    from_fc = attribution(inputs, {}, composite, start_layer="fc",
                          init_rel=lambda logits: logits * torch.nn.functional.one_hot(torch.tensor(1), 4))
    torch.testing.assert_close(from_fc.heatmap, plain.heatmap, rtol=1e-12, atol=1e-15)
    # begun at an inner layer with its recorded relevance, the pass below it is the same again
    inner = attribution(inputs, {}, composite, start_layer="block2.sum", init_rel=plain.relevances["block2.sum"])
    torch.testing.assert_close(inner.heatmap, plain.heatmap, rtol=1e-10, atol=1e-14)
    # a tensor that broadcasts to one row is each row's initial relevance, as the number it holds
    broadcast = attribution(inputs, {"y": [1, 2]}, composite, init_rel=torch.full((4,), 2.0))
    filled = attribution(inputs, {"y": [1, 2]}, composite, init_rel=2)
    torch.testing.assert_close(broadcast.heatmap, filled.heatmap, rtol=0, atol=0)
    assert filled.heatmap.abs().max() > 0
    # results on the asked device (meta: shapes, no values)
    moved = attribution(inputs, {"y": [1]}, composite, record_layer=["stem"], on_device="meta")
    for tensor in [moved.heatmap, moved.prediction, moved.relevances["stem"], moved.activations["stem"]]:
        assert tensor.device.type == "meta"
    assert moved.heatmap.shape == plain.heatmap.shape


def test_concepts_start_layer_and_init_rel_errors_name_the_fix(residual_setup, model_state, assert_same_state):
    model, composite, inputs = residual_setup()
    before = model_state(model)
    attribution = CondAttribution(model)
    with pytest.raises(ValueError, match="lie above start_layer 'block1.sum'"):
        attribution(inputs, {"block2.conv2": [0]}, composite, start_layer="block1.sum")
    with pytest.raises(ValueError, match="no layer 'block9'"):
        attribution(inputs, {}, composite, start_layer="block9")
    with pytest.raises(TypeError, match="init_rel must be None, a callable"):
        attribution(inputs, {"y": [0]}, composite, init_rel="ones")
    with pytest.raises(ValueError, match="fits neither the 3 explained rows"):
        attribution(inputs, {"y": [0]}, composite, init_rel=torch.ones(2, 4))
    with pytest.raises(ValueError, match="must return the shape of its input"):
        attribution(inputs, {"y": [0]}, composite, init_rel=lambda logits: logits.sum(dim=1))
    with pytest.raises(ValueError, match="no 'y'.*start_layer= or init_rel="):
        attribution(inputs, {"stem": [0]}, composite)
    assert_same_state(before, model_state(model))
