"""Head concepts of transformers under CP-LRP and AttnLRP: the heads, and the dimensions of each head's value vector
and output, split the attention layer's relevance exactly, on the ViT and GPT-2 models tested against LXT."""
import copy

import pytest
import torch

from lrp_lightning.attribution import Gradient
from lrp_lightning.composites import CPLRP, AttnLRP
from lrp_lightning.concepts import ChannelConcept, CondAttribution, GroupConcept, HeadDimensionConcept


pytestmark = pytest.mark.usefixtures("float64_default")
COMPOSITES = {"cp_lrp": CPLRP, "attn_lrp": AttnLRP}
# the share of a head's relevance its values get: CP-LRP holds the attention weights constant (all of it); AttnLRP's
# uniform rule splits the product of weights and values equally between the two factors (half)
VALUE_SHARE = {"cp_lrp": 1.0, "attn_lrp": 0.5}


class LastPositionLogits(torch.nn.Module):
    """A causal language model explained from its input embeddings, by the logits of the last position."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.model(inputs_embeds=embeddings).logits[:, -1]


@pytest.fixture
def vit_case(load_golden, torchvision_vit):
    """Call ``vit_case()`` for the golden ViT, its second attention's output projection (module and name), the
    number and size of its heads and two images."""

    def vit_case():
        model = torchvision_vit(load_golden("vit_cp_lrp"))
        attention = model.encoder.layers.encoder_layer_1.self_attention
        images = torch.randn(2, 3, *[model.image_size] * 2, generator=torch.Generator().manual_seed(0))
        return model, attention.out_proj, "encoder.layers.encoder_layer_1.self_attention.out_proj", \
            attention.num_heads, attention.head_dim, images

    return vit_case


@pytest.fixture
def gpt2_case(golden_language_model, load_golden):
    """Call ``gpt2_case()`` for the golden GPT-2 explained by its last position's logits, its second attention's
    output projection (module and name), the number and size of its heads and two token embeddings."""

    def gpt2_case():
        language_model = golden_language_model(load_golden("gpt2_cp_lrp"), "eager")
        model = LastPositionLogits(language_model).eval()
        attention = language_model.transformer.h[1].attn
        tokens = torch.randint(0, language_model.config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(0))
        embeddings = language_model.transformer.wte(tokens).detach()
        projection_name = "model.transformer.h.1.attn.c_proj"
        return model, attention.c_proj, projection_name, attention.num_heads, attention.head_dim, embeddings

    return gpt2_case


CASES = {"vit": "vit_case", "gpt2": "gpt2_case"}  # the fixtures building each case


def bias_free_case(make_case, composite_name):
    """The case's model with its attention's output projection made bias-free (a bias-free projection passes all
    relevance from its output to its input), the composite, and the names of the heads' output and the layer."""
    model, projection, projection_name, heads, head_dim, inputs = make_case()
    with torch.no_grad():
        projection.bias.zero_()
    composite = COMPOSITES[composite_name](epsilon=1e-12)
    return model, heads, head_dim, inputs, composite, f"{projection_name}:input", projection_name


@pytest.mark.parametrize("composite_name", sorted(COMPOSITES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_concepts_head_concepts_sum_to_the_attention_layer_relevance(request, case, composite_name):
    model, heads, head_dim, inputs, composite, heads_in, attention_out = bias_free_case(
        request.getfixturevalue(CASES[case]), composite_name)
    attribution = CondAttribution(model)
    target = 1
    plain = attribution(inputs, {"y": [target]}, composite, record_layer=[heads_in, attention_out])
    head_concept = GroupConcept(head_dim, dim=-1)
    per_head = head_concept.attribute(plain.relevances[heads_in], abs_norm=False)
    assert per_head.shape == (2, heads)
    # conservation: the heads' relevances add up to the attention layer's (its output projection's) relevance
    layer_total = plain.relevances[attention_out].flatten(1).sum(dim=1)
    torch.testing.assert_close(per_head.sum(dim=1), layer_total, rtol=1e-6, atol=1e-10)
    assert per_head.abs().min() > 0
    # the dimensions of each head's output add up to the head
    per_dimension = ChannelConcept(dim=-1).attribute(plain.relevances[heads_in], abs_norm=False)
    torch.testing.assert_close(per_dimension.reshape(2, heads, head_dim).sum(dim=-1), per_head)
    # conditioned on one head at a time, each pass keeps exactly that head's relevance, and the heads' input
    # heatmaps add up to the heatmap of all relevance through the heads
    conditional = attribution(inputs[:1], [{"y": [target], heads_in: [h]} for h in range(heads)], composite,
                              record_layer=[heads_in], mask_map={heads_in: head_concept})
    kept = head_concept.attribute(conditional.relevances[heads_in], abs_norm=False)
    torch.testing.assert_close(kept, torch.diag(per_head[0]))
    through = attribution(inputs[:1], {"y": [target], heads_in: list(range(heads))}, composite,
                          mask_map={heads_in: head_concept})
    torch.testing.assert_close(conditional.heatmap.sum(dim=0), through.heatmap[0], rtol=1e-8, atol=1e-12)


def test_concepts_head_conditions_leave_the_transformer_unchanged(vit_case):
    model, _, projection_name, heads, head_dim, inputs = vit_case()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(IndexError, match=f"with {heads} concepts"):
        CondAttribution(model)(inputs, {"y": [0], f"{projection_name}:input": [heads]}, CPLRP(),
                               mask_map=GroupConcept(head_dim, dim=-1))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


# the layer holding each model's values (with the channel where they begin), and its heads' output
VALUES = {
    "vit": lambda heads, head_dim: ("encoder.layers.encoder_layer_1.self_attention.canonizer_v_proj", 0),
    "gpt2": lambda heads, head_dim: ("model.transformer.h.1.attn.c_attn", 2 * heads * head_dim),
}


@pytest.mark.parametrize("composite_name", sorted(COMPOSITES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_concepts_value_dimension_concepts_split_the_heads_and_the_layer(request, case, composite_name):
    model, heads, head_dim, inputs, composite, heads_in, attention_out = bias_free_case(
        request.getfixturevalue(CASES[case]), composite_name)
    values, offset = VALUES[case](heads, head_dim)
    value_concept, output_concept = HeadDimensionConcept(heads, head_dim, offset=offset), HeadDimensionConcept(heads, head_dim)
    attribution = CondAttribution(model)
    target, share = 1, VALUE_SHARE[composite_name]
    plain = attribution(inputs, {"y": [target]}, composite, record_layer=[values, heads_in, attention_out])
    per_value = value_concept.attribute(plain.relevances[values], abs_norm=False)
    per_output = output_concept.attribute(plain.relevances[heads_in], abs_norm=False)
    assert per_value.shape == per_output.shape == (2, heads * head_dim)
    assert per_output.abs().min() > 0
    # each dimension of a head's values carries its share of the same dimension of the head's output
    torch.testing.assert_close(per_value, share * per_output, rtol=1e-6, atol=1e-12)
    # the dimensions of a head sum to the head's relevance, all of a layer's to the layer's
    head_relevance = GroupConcept(head_dim, dim=-1).attribute(plain.relevances[heads_in], abs_norm=False)
    torch.testing.assert_close(output_concept.per_head(per_output), head_relevance)
    torch.testing.assert_close(value_concept.per_head(per_value), share * head_relevance, rtol=1e-6, atol=1e-12)
    layer_total = plain.relevances[attention_out].flatten(1).sum(dim=1)
    torch.testing.assert_close(per_output.sum(dim=1), layer_total, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(per_value.sum(dim=1), share * layer_total, rtol=1e-6, atol=1e-12)
    # conditioned on one value dimension of head 1 at a time: each pass keeps exactly that dimension's relevance,
    # and the heatmaps add up to the heatmap of the whole head
    dimensions = value_concept.head_concepts(1)
    mask_map = {values: value_concept}
    conditional = attribution(inputs[:1], [{"y": [target], values: [d]} for d in dimensions], composite,
                              record_layer=[values], mask_map=mask_map)
    kept = value_concept.attribute(conditional.relevances[values], abs_norm=False)
    torch.testing.assert_close(kept[:, dimensions], torch.diag(per_value[0, dimensions]))
    assert kept[:, [c for c in range(heads * head_dim) if c not in dimensions]].abs().max() == 0
    head = attribution(inputs[:1], {"y": [target], values: dimensions}, composite, mask_map=mask_map)
    torch.testing.assert_close(conditional.heatmap.sum(dim=0), head.heatmap[0], rtol=1e-8, atol=1e-12)
    # a condition on every dimension of the heads' output is the unconditioned attribution (one pass); so is one on
    # every value dimension where nothing else of the layer carries relevance (the values are the whole layer, or
    # CP-LRP gives the queries and keys none)
    every = attribution(inputs, {"y": [target], heads_in: list(range(heads * head_dim))}, composite,
                        mask_map={heads_in: output_concept}, exclude_parallel=False)
    torch.testing.assert_close(every.heatmap, plain.heatmap, rtol=1e-12, atol=1e-15)
    if offset == 0 or composite_name == "cp_lrp":
        every = attribution(inputs, {"y": [target], values: list(range(heads * head_dim))}, composite,
                            mask_map=mask_map, exclude_parallel=False)
        torch.testing.assert_close(every.heatmap, plain.heatmap, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("composite_name", sorted(COMPOSITES))
def test_concepts_gradient_view_attribution_is_the_attributors(composite_name, vit_case):
    model, _, _, _, _, images = vit_case()
    composite = COMPOSITES[composite_name](epsilon=1e-12)
    result = CondAttribution(model)(images, {"y": [1]}, composite)
    with Gradient(model, composite) as attributor:
        _, relevance = attributor(images, torch.tensor([1, 1]))
    torch.testing.assert_close(result.heatmap, relevance.sum(dim=1), rtol=1e-12, atol=1e-15)


def test_concepts_value_dimension_errors_name_the_fix(vit_case):
    model, _, _, heads, head_dim, images = vit_case()
    values = VALUES["vit"](heads, head_dim)[0]
    before = copy.deepcopy(model.state_dict())
    attribution = CondAttribution(model)
    with pytest.raises(ValueError, match="fewer than offset 16"):
        attribution(images, {"y": [0], values: [0]}, CPLRP(), mask_map=HeadDimensionConcept(heads, head_dim, offset=16))
    with pytest.raises(IndexError, match=f"with {heads * head_dim} concepts"):
        attribution(images, {"y": [0], values: [heads * head_dim]}, CPLRP(), mask_map=HeadDimensionConcept(heads, head_dim))
    with pytest.raises(IndexError, match=f"out of range for {heads} heads"):
        HeadDimensionConcept(heads, head_dim).concept(heads, 0)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
