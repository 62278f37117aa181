"""Head concepts of transformers under CP-LRP and AttnLRP: the heads (and the dimensions of each head's output)
entering an attention's output projection split that layer's relevance exactly, on the ViT and GPT-2 models
tested against LXT."""
import copy

import pytest
import torch

from lrp_lightning.composites import CPLRP, AttnLRP
from lrp_lightning.concepts import ChannelConcept, CondAttribution, GroupConcept


pytestmark = pytest.mark.usefixtures("float64_default")
COMPOSITES = {"cp_lrp": CPLRP, "attn_lrp": AttnLRP}


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


@pytest.mark.parametrize("composite_name", sorted(COMPOSITES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_concepts_head_concepts_sum_to_the_attention_layer_relevance(request, case, composite_name):
    model, projection, projection_name, heads, head_dim, inputs = request.getfixturevalue(CASES[case])()
    with torch.no_grad():
        projection.bias.zero_()  # a bias-free projection passes all relevance from its output to its input
    composite = COMPOSITES[composite_name](epsilon=1e-12)
    heads_in, attention_out = f"{projection_name}:input", projection_name
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
