"""Attributors on token inputs (and on images with gradient-view composites), on tiny pure-torch
transformers: embedding -> encoder layer -> head."""
from types import SimpleNamespace

import pytest
import torch

from lrp_lightning.attribution import Gradient, SmoothGrad
from lrp_lightning.composites import AttnLRP, CPLRP
from lrp_lightning.transformer.tokens import explained_logits, input_embedding



pytestmark = pytest.mark.usefixtures("float64_default")

VOCABULARY, DIM = 11, 8


class TinyTextModel(torch.nn.Module):
    """Token embedding -> (optional position embedding) -> TransformerEncoderLayer -> head.

    ``pool="first"``: a classifier reading the first token, logits ``(N, K)``; ``pool=None``: a
    language-model head on every position, logits ``(N, T, V)``.
    """

    def __init__(self, pool="first", positions=False, bias=False, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.embedding = torch.nn.Embedding(VOCABULARY, DIM)
        self.positions = torch.nn.Parameter(torch.randn(1, 6, DIM)) if positions else None
        self.encoder = torch.nn.TransformerEncoderLayer(DIM, 2, 16, dropout=0.0, batch_first=True, bias=bias)
        self.head = torch.nn.Linear(DIM, 3 if pool else VOCABULARY, bias=bias)
        self.pool = pool
        for parameter in self.parameters():
            parameter.data.normal_(0, 0.5)
        self.eval()

    def forward_embedded(self, embedded, attention_mask=None):
        if self.positions is not None:
            embedded = embedded + self.positions[:, : embedded.shape[1]]
        padding = None if attention_mask is None else attention_mask == 0
        hidden = self.encoder(embedded, src_key_padding_mask=padding)
        return self.head(hidden[:, 0] if self.pool == "first" else hidden)

    def forward(self, input_ids, attention_mask=None):
        return self.forward_embedded(self.embedding(input_ids), attention_mask)


def tokens(batch=3, length=5, seed=1):
    return torch.randint(0, VOCABULARY, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def text_model_by_hand(attention_by_hand, identity_rule, layer_norm_by_hand):
    """Call ``text_model_by_hand(model, embedded, rule)`` for TinyTextModel's forward (post-norm encoder layer,
    ReLU) under the gradient-view rules written out by hand."""

    def text_model_by_hand(model, embedded, rule):
        layer = model.encoder
        x = embedded + model.positions[:, : embedded.shape[1]] if model.positions is not None else embedded
        x = layer_norm_by_hand(x + attention_by_hand(x, layer.self_attn, rule), layer.norm1)
        hidden = identity_rule(torch.relu, layer.linear1(x))
        x = layer_norm_by_hand(x + layer.linear2(hidden), layer.norm2)
        return model.head(x[:, 0] if model.pool == "first" else x)

    return text_model_by_hand


RULE_NAMES = {CPLRP: "cp_lrp", AttnLRP: "attn_lrp"}


def test_cp_lrp_token_relevance_conserves_the_logit():
    model = TinyTextModel()
    ids = tokens()
    with Gradient(model, CPLRP(epsilon=1e-12)) as attributor:
        output, relevance = attributor(ids, torch.tensor([0, 1, 2]))
    assert relevance.shape == ids.shape
    torch.testing.assert_close(output, model(ids))
    selected = output[torch.arange(3), torch.tensor([0, 1, 2])]
    torch.testing.assert_close(relevance.sum(1), selected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("composite", [CPLRP, AttnLRP])
def test_token_relevance_is_embedding_times_modified_gradient(composite, text_model_by_hand):
    model = TinyTextModel(positions=True, bias=True)
    ids = tokens()
    target = torch.tensor([2, 0, 1])
    _, relevance = Gradient(model, composite())(ids, target)
    with composite().context(model):
        embedded = model.embedding(ids).detach().requires_grad_(True)
        output = model.forward_embedded(embedded)
        gradient, = torch.autograd.grad(output[torch.arange(3), target].sum(), embedded)
    torch.testing.assert_close(relevance, (embedded * gradient).sum(-1).detach(), rtol=1e-12, atol=1e-14)
    # independently: the rules written out by hand (tests/_support/rules_by_hand.py), at epsilon 1e-12 (where
    # the stabilizers change nothing the float64 comparison sees)
    _, relevance = Gradient(model, composite(epsilon=1e-12))(ids, target)
    embedded = model.embedding(ids).detach().requires_grad_(True)
    output = text_model_by_hand(model, embedded, RULE_NAMES[composite])
    torch.testing.assert_close(output, model(ids))
    gradient, = torch.autograd.grad(output[torch.arange(3), target].sum(), embedded)
    torch.testing.assert_close(relevance, (embedded * gradient).sum(-1).detach(), rtol=1e-7, atol=1e-10)


def test_without_composite_token_relevance_is_gradient_times_input():
    model = TinyTextModel()
    ids = tokens()
    _, relevance = Gradient(model)(ids, 1)
    embedded = model.embedding(ids).detach().requires_grad_(True)
    gradient, = torch.autograd.grad(model.forward_embedded(embedded)[:, 1].sum(), embedded)
    torch.testing.assert_close(relevance, (embedded * gradient).sum(-1).detach())


def test_attention_mask_is_passed_through_and_padded_tokens_get_no_relevance():
    model = TinyTextModel()
    ids = tokens()
    mask = torch.ones_like(ids)
    mask[0, 3:] = 0
    mask[2, 4:] = 0
    with Gradient(model, CPLRP()) as attributor:
        output, relevance = attributor(ids, None, attention_mask=mask)
        _, unmasked = attributor(ids, None)
    torch.testing.assert_close(output, model(ids, attention_mask=mask))
    assert torch.all(relevance[mask == 0] == 0)
    assert not torch.allclose(relevance[0], unmasked[0])


def test_language_model_logits_are_explained_at_the_last_attended_position():
    model = TinyTextModel(pool=None)
    ids = tokens()
    mask = torch.ones_like(ids)
    mask[1, 2:] = 0  # right padding: the last attended token of sample 1 is at index 1
    next_tokens = torch.tensor([3, 4, 5])
    with Gradient(model, AttnLRP()) as attributor:
        output, relevance = attributor(ids, next_tokens, attention_mask=mask)
        _, explicit = attributor(ids, next_tokens, attention_mask=mask, position=torch.tensor([4, 1, 4]))
        last, _ = attributor(ids, next_tokens, position=-1)
    logits = model(ids, attention_mask=mask)
    torch.testing.assert_close(output, logits[torch.arange(3), torch.tensor([4, 1, 4])])
    torch.testing.assert_close(relevance, explicit)
    torch.testing.assert_close(last, model(ids)[:, -1])
    assert output.shape == (3, VOCABULARY) and relevance.shape == (3, 5)
    with pytest.raises(ValueError, match="position must lie in"):
        Gradient(model, AttnLRP())(ids, next_tokens, position=5)


def test_model_outputs_with_logits_are_explained_through_their_logits():
    model = TinyTextModel()

    class WithModelOutput(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def get_input_embeddings(self):
            return self.inner.embedding

        def forward(self, input_ids, attention_mask=None):
            return SimpleNamespace(logits=self.inner(input_ids, attention_mask), hidden_states=None)

    wrapped = WithModelOutput()
    assert input_embedding(wrapped) is model.embedding
    ids = tokens()
    expected = Gradient(model, CPLRP())(ids, 1)
    result = Gradient(wrapped, CPLRP())(ids, 1)
    for ours, theirs in zip(result, expected):
        torch.testing.assert_close(ours, theirs)


def test_token_attribution_leaves_the_model_as_it_was_also_when_it_raises(assert_same_state, model_state):
    model = TinyTextModel(positions=True)
    before = model_state(model)
    ids = tokens()
    Gradient(model, AttnLRP())(ids, 0, attention_mask=torch.ones_like(ids))
    assert_same_state(before, model_state(model))
    with pytest.raises(TypeError):
        Gradient(model, AttnLRP())(ids, 0, not_an_argument=1)
    assert_same_state(before, model_state(model))


def test_bad_token_inputs_get_clear_errors():
    model = TinyTextModel()
    ids = tokens()
    with pytest.raises(TypeError, match="explain token ids with Gradient"):
        SmoothGrad(model, AttnLRP())(ids, 0)
    with pytest.raises(ValueError, match="no get_input_embeddings"):
        Gradient(torch.nn.Linear(5, 3), AttnLRP())(ids, 0)
    with pytest.raises(TypeError, match="position= selects the explained position for token-id inputs"):
        Gradient(model, AttnLRP())(torch.randn(3, 5), 0, position=1)
    with pytest.raises(ValueError, match=r"logits \(N, K\) or \(N, T, V\)"):
        explained_logits(torch.zeros(3, 5, 2, 2), ids, None, None)


def test_image_relevance_under_gradient_view_composites_is_input_times_gradient(tiny_vit, vit_by_hand):

    model = tiny_vit()
    x = torch.randn(2, 3, 8, 8)
    composite = CPLRP()
    _, relevance = Gradient(model, composite)(x, torch.tensor([0, 2]))
    inputs = x.clone().requires_grad_(True)
    with composite.context(model):
        gradient, = torch.autograd.grad(model(inputs)[torch.arange(2), torch.tensor([0, 2])].sum(), inputs)
    torch.testing.assert_close(relevance, x * gradient)
    _, smooth = SmoothGrad(model, composite, noise_level=0.0, n_iter=2)(x, torch.tensor([0, 2]))
    torch.testing.assert_close(smooth, relevance)
    # independently: the rules written out by hand (tests/_support/rules_by_hand.py), for both composites
    for cls in (CPLRP, AttnLRP):
        _, relevance = Gradient(model, cls(epsilon=1e-12))(x, torch.tensor([0, 2]))
        inputs = x.clone().requires_grad_(True)
        output = vit_by_hand(model, inputs, RULE_NAMES[cls])
        torch.testing.assert_close(output, model(x))
        gradient, = torch.autograd.grad(output[torch.arange(2), torch.tensor([0, 2])].sum(), inputs)
        torch.testing.assert_close(relevance, x * gradient, rtol=1e-7, atol=1e-10)
