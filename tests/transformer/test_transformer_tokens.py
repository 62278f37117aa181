"""Attributors on token inputs (and on images with gradient-view composites), on tiny pure-torch
transformers: embedding -> encoder layer -> head."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from lrp_lightning.attribution import Gradient, SmoothGrad
from lrp_lightning.composites import AttnLRP, CPLRP
from lrp_lightning.transformer.tokens import explained_logits, input_embedding

from engine_models import assert_same_state, model_state

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


# --- the rules of DESIGN's gradient view, written out independently of the library (epsilon -> 0) ---
# linear layers and embeddings: the plain gradient; LayerNorm: its standard deviation held constant;
# element-wise activations: the identity rule, f(x) = x * (f(x) / x) with the ratio held constant;
# attention: CP-LRP holds the softmax weights constant, AttnLRP passes the softmax's plain gradient and
# splits each product uniformly (half of the gradient to each factor of Q K^T and of A V).


def gradient_share(tensor, share):
    """``tensor`` unchanged, its gradient multiplied by ``share``."""
    return tensor * share + (tensor * (1 - share)).detach()


def layer_norm_by_hand(x, norm):
    sigma = (x.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt().detach()
    return (x - x.mean(-1, keepdim=True)) / sigma * norm.weight + norm.bias


def identity_rule(function, x):
    return x * (function(x) / x).detach()


def attention_by_hand(x, attention, rule, softmaxes=None):
    """``nn.MultiheadAttention`` (batch first, no mask) under the rule; appends ``(scores, weights)`` of
    the softmax, their gradients retained, to ``softmaxes`` if given."""
    n, t, d = x.shape
    heads = attention.num_heads
    q, k, v = (u.reshape(n, t, heads, d // heads).transpose(1, 2)
               for u in F.linear(x, attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1))
    if rule == "attn_lrp":  # uniform at Q K^T and at A V
        q, k, v = gradient_share(q, 0.5), gradient_share(k, 0.5), gradient_share(v, 0.5)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d // heads)
    weights = scores.softmax(-1)
    if softmaxes is not None and weights.requires_grad:
        scores.retain_grad()
        weights.retain_grad()
        softmaxes.append((scores, weights))
    weights = gradient_share(weights, 0.5) if rule == "attn_lrp" else weights.detach()
    mixed = (weights @ v).transpose(1, 2).reshape(n, t, d)
    return F.linear(mixed, attention.out_proj.weight, attention.out_proj.bias)


def text_model_by_hand(model, embedded, rule):
    """TinyTextModel's forward (post-norm encoder layer, ReLU) under the rules written out above."""
    layer = model.encoder
    x = embedded + model.positions[:, : embedded.shape[1]] if model.positions is not None else embedded
    x = layer_norm_by_hand(x + attention_by_hand(x, layer.self_attn, rule), layer.norm1)
    hidden = identity_rule(torch.relu, layer.linear1(x))
    x = layer_norm_by_hand(x + layer.linear2(hidden), layer.norm2)
    return model.head(x[:, 0] if model.pool == "first" else x)


def vit_by_hand(model, image, rule, softmaxes=None):
    """torchvision's VisionTransformer forward (pre-norm blocks, GELU) under the rules written out above
    (``softmaxes`` as for :func:`attention_by_hand`)."""
    n = image.shape[0]
    x = model.conv_proj(image).reshape(n, model.hidden_dim, -1).permute(0, 2, 1)
    x = torch.cat([model.class_token.expand(n, -1, -1), x], dim=1) + model.encoder.pos_embedding
    for block in model.encoder.layers:
        x = x + attention_by_hand(layer_norm_by_hand(x, block.ln_1), block.self_attention, rule, softmaxes)
        y = layer_norm_by_hand(x, block.ln_2)
        x = x + block.mlp[3](identity_rule(F.gelu, block.mlp[0](y)))
    return model.heads(layer_norm_by_hand(x, model.encoder.ln)[:, 0])


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
def test_token_relevance_is_embedding_times_modified_gradient(composite):
    model = TinyTextModel(positions=True, bias=True)
    ids = tokens()
    target = torch.tensor([2, 0, 1])
    _, relevance = Gradient(model, composite())(ids, target)
    with composite().context(model):
        embedded = model.embedding(ids).detach().requires_grad_(True)
        output = model.forward_embedded(embedded)
        gradient, = torch.autograd.grad(output[torch.arange(3), target].sum(), embedded)
    torch.testing.assert_close(relevance, (embedded * gradient).sum(-1).detach(), rtol=1e-12, atol=1e-14)
    # independently: the rules written out in this file, at epsilon 1e-12 (where the stabilizers change
    # nothing the float64 comparison sees)
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


def test_token_attribution_leaves_the_model_as_it_was_also_when_it_raises():
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


def test_image_relevance_under_gradient_view_composites_is_input_times_gradient():
    from test_transformer_vit import tiny_vit

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
    # independently: the rules written out in this file, for both composites
    for cls in (CPLRP, AttnLRP):
        _, relevance = Gradient(model, cls(epsilon=1e-12))(x, torch.tensor([0, 2]))
        inputs = x.clone().requires_grad_(True)
        output = vit_by_hand(model, inputs, RULE_NAMES[cls])
        torch.testing.assert_close(output, model(x))
        gradient, = torch.autograd.grad(output[torch.arange(2), torch.tensor([0, 2])].sum(), inputs)
        torch.testing.assert_close(relevance, x * gradient, rtol=1e-7, atol=1e-10)
