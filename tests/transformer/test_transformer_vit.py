"""Canonizers of PyTorch's and torchvision's transformer modules and the transformer composites on
them: same forward, conservation under CP-LRP on bias-free models, AttnLRP's absorbed share, and
bitwise restoration of everything (also after an exception)."""
import itertools
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from lrp_lightning.transformer.attention import MultiheadAttentionCanonizer, TransformerLayerActivationCanonizer
from lrp_lightning.auto_canonizers import auto_canonizers, register_auto_canonizer, registered_auto_canonizers
from lrp_lightning.composites import AttnLRP, CPLRP
from lrp_lightning.torchvision import VisionTransformerCanonizer



pytestmark = pytest.mark.usefixtures("float64_default")


def remove_all(instances):
    for instance in reversed(instances):
        instance.remove()


@pytest.fixture
def full_state(model_state):
    """Call ``full_state(model)`` for ``model_state`` plus the identity of every instance attribute (forward
    methods, activations)."""

    def full_state(model):
        """model_state plus the identity of every instance attribute (forward methods, activations)."""
        state = model_state(model)
        state["instance_values"] = [{key: id(value) for key, value in m.__dict__.items()} for m in model.modules()]
        return state

    return full_state


MHA_CASES = list(itertools.product([True, False], [True, False], ["none", "bool", "float", "3d"], [False, True]))


@pytest.mark.parametrize("batch_first, need_weights, mask, padding", MHA_CASES)
def test_canonized_multihead_attention_computes_the_same(
    batch_first, need_weights, mask, padding, assert_same_state, full_state
):
    torch.manual_seed(0)
    attention = torch.nn.MultiheadAttention(8, 2, batch_first=batch_first).eval()
    attention.in_proj_bias.data.normal_()
    batch, length = 3, 5
    shape = (batch, length, 8) if batch_first else (length, batch, 8)
    query, key = torch.randn(shape), torch.randn(shape)
    kwargs = {"need_weights": need_weights}
    if mask == "bool":
        kwargs["attn_mask"] = torch.rand(length, length) > 0.7
        kwargs["attn_mask"].fill_diagonal_(False)
    elif mask == "float":
        kwargs["attn_mask"] = torch.randn(length, length)
    elif mask == "3d":
        kwargs["attn_mask"] = torch.randn(batch * 2, length, length)
    if padding:
        padding_mask = torch.zeros(batch, length, dtype=torch.bool)
        padding_mask[0, -2:] = True
        kwargs["key_padding_mask"] = padding_mask if mask in ("none", "bool") else padding_mask.double() * -1e9
    expected = attention(query, key, key, **kwargs)
    before = full_state(attention)
    instances = MultiheadAttentionCanonizer().apply(attention)
    try:
        assert "forward" in attention.__dict__ and hasattr(attention, "canonizer_scores")
        output = attention(query, key, key, **kwargs)
    finally:
        remove_all(instances)
    torch.testing.assert_close(output[0], expected[0], rtol=1e-12, atol=1e-12)
    if need_weights:
        torch.testing.assert_close(output[1], expected[1], rtol=1e-12, atol=1e-12)
    else:
        assert output[1] is None and expected[1] is None
    assert_same_state(before, full_state(attention))
    assert before["instance_values"] == full_state(attention)["instance_values"]


@pytest.mark.parametrize(
    "options",
    [
        {"kdim": 5, "vdim": 3},
        {"add_bias_kv": True, "add_zero_attn": True},
        {"bias": False},
        {"unbatched": True},
        {"average": False},
        {"causal": True},
    ],
    ids=lambda options: "-".join(options),
)
def test_canonized_multihead_attention_variants(options):
    torch.manual_seed(1)
    options = dict(options)
    unbatched, average, causal = options.pop("unbatched", False), options.pop("average", True), options.pop("causal", False)
    attention = torch.nn.MultiheadAttention(6, 3, batch_first=True, **options).eval()
    for parameter in attention.parameters():
        parameter.data.normal_()
    shape = (4,) if unbatched else (2, 4)
    query = torch.randn(*shape, 6)
    key = torch.randn(*shape, options.get("kdim", 6))
    value = torch.randn(*shape, options.get("vdim", 6))
    kwargs = {"average_attn_weights": average}
    if causal:
        kwargs.update(attn_mask=torch.nn.Transformer.generate_square_subsequent_mask(4), is_causal=True, need_weights=False)
    expected = attention(query, key, value, **kwargs)
    instances = MultiheadAttentionCanonizer().apply(attention)
    try:
        output = attention(query, key, value, **kwargs)
        if causal:
            with pytest.raises(RuntimeError, match="Need attn_mask"):
                attention(query, key, value, is_causal=True)
    finally:
        remove_all(instances)
    for ours, theirs in zip(output, expected):
        if theirs is None:
            assert ours is None
        else:
            torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_projections_are_views_of_the_packed_weights_and_nothing_is_copied_or_written():
    attention = torch.nn.MultiheadAttention(4, 2)
    versions = [p._version for p in attention.parameters()]
    instances = MultiheadAttentionCanonizer().apply(attention)
    try:
        q, k, v = attention.canonizer_q_proj, attention.canonizer_k_proj, attention.canonizer_v_proj
        assert type(q) is torch.nn.Linear
        packed = attention.in_proj_weight
        for index, projection in enumerate((q, k, v)):
            assert projection.weight.data_ptr() == packed[4 * index].data_ptr()
            assert torch.equal(projection.weight, packed[4 * index: 4 * (index + 1)])
            assert torch.equal(projection.bias, attention.in_proj_bias[4 * index: 4 * (index + 1)])
    finally:
        remove_all(instances)
    assert [p._version for p in attention.parameters()] == versions
    assert not hasattr(attention, "canonizer_q_proj")


def relevance_of_vit(composite, model, x, target):
    """Relevance of the pixels and of the class-token and position-embedding parameters."""
    x = x.clone().requires_grad_(True)
    parameters = [model.class_token, model.encoder.pos_embedding]
    with composite.context(model):
        output = model(x)
        score = output[torch.arange(len(x)), target]
        g_x, g_class, g_position = torch.autograd.grad(score.sum(), [x] + parameters)
    pixels = (x * g_x).flatten(1).sum(1)
    additive = (parameters[0] * g_class).sum() + (parameters[1] * g_position).sum()
    return score.detach(), pixels.detach(), additive.detach()


def test_cp_lrp_conserves_the_target_logit_on_a_bias_free_vision_transformer(tiny_vit):
    model = tiny_vit(bias=False)
    x = torch.randn(3, 3, 8, 8)
    target = torch.tensor([0, 1, 2])
    score, pixels, additive = relevance_of_vit(CPLRP(epsilon=1e-12), model, x, target)
    torch.testing.assert_close(pixels.sum() + additive, score.sum(), rtol=1e-6, atol=0)
    assert additive.abs() > 1e-3 * score.abs().sum()  # the additive embeddings do take a share


def test_attn_lrp_absorbs_relevance_in_the_softmax(tiny_vit, vit_by_hand):
    """AttnLRP's softmax rule drops the softmax's bias term, so it does not conserve: on the bias-free
    tiny ViT (2 layers, hidden size 8, weights N(0, 0.5), seeds 0-7, four images) the logit minus the
    relevance of the pixels and the additive embeddings is exactly the sum over the softmax calls of
    ``sum(A * g_A) - sum(S * g_S)`` (relevance at the weights minus relevance at the scores), computed
    from a forward written out by hand (the ``vit_by_hand`` fixture). It is far above the
    tolerance to which CP-LRP conserves on the same models (1e-6 of the logit)."""

    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 1, 2, 0])
    for seed in range(8):
        model = tiny_vit(bias=False, seed=seed)
        score, pixels, additive = relevance_of_vit(AttnLRP(epsilon=1e-12), model, x, target)
        softmaxes = []
        image = x.clone().requires_grad_(True)
        output = vit_by_hand(model, image, "attn_lrp", softmaxes)
        output[torch.arange(len(x)), target].sum().backward()
        bias_term = sum((weights * weights.grad).sum() - (scores * scores.grad).sum() for scores, weights in softmaxes)
        torch.testing.assert_close(score.sum() - pixels.sum() - additive, bias_term, rtol=1e-6, atol=1e-9)
        assert bias_term.abs() > 1e-6 * score.sum().abs()
        score, pixels, additive = relevance_of_vit(CPLRP(epsilon=1e-12), model, x, target)
        torch.testing.assert_close(pixels.sum() + additive, score.sum(), rtol=1e-6, atol=0)


def test_vit_under_both_composites_is_restored_bitwise_also_after_an_exception(assert_same_state, full_state, tiny_vit):
    model = tiny_vit()
    model.heads.head.weight.grad = torch.randn_like(model.heads.head.weight)
    before = full_state(model)
    x = torch.randn(1, 3, 8, 8)
    for composite in (AttnLRP(), CPLRP(gamma=0.25), AttnLRP(canonizers=[VisionTransformerCanonizer()])):
        relevance_of_vit(composite, model, x, torch.tensor([1]))
        assert_same_state(before, full_state(model))
        assert before["instance_values"] == full_state(model)["instance_values"]
        with pytest.raises(RuntimeError, match="boom"):
            with composite.context(model):
                model(x.requires_grad_(True)).sum().backward()
                raise RuntimeError("boom")
        x.grad = None
        model.zero_grad(set_to_none=True)
        model.heads.head.weight.grad = before["grads"][-2].clone()
        assert_same_state(before, full_state(model))
        assert composite.rule_map == {} and not composite.handles and not composite.canonizer_instances


def test_canonizer_failing_midway_undoes_what_it_did(assert_same_state, full_state):
    model = torch.nn.Sequential(torch.nn.MultiheadAttention(4, 2), torch.nn.MultiheadAttention(4, 2))
    model[1].in_proj_weight = None  # a broken second module: building its projections fails
    before = full_state(model)
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'shape'"):
        MultiheadAttentionCanonizer().apply(model)
    assert_same_state(before, full_state(model))


def tiny_encoder(norm_first, activation, batch_first=True, bias=False, seed=0):
    torch.manual_seed(seed)
    layer = torch.nn.TransformerEncoderLayer(
        8, 2, dim_feedforward=16, dropout=0.0, activation=activation, batch_first=batch_first, norm_first=norm_first, bias=bias
    )
    encoder = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    for parameter in encoder.parameters():
        parameter.data.normal_(0, 0.4)
    return encoder.eval()


@pytest.mark.parametrize("norm_first, activation", [(True, "gelu"), (False, "relu"), (True, torch.nn.SiLU())])
def test_transformer_encoder_layers_are_canonized_and_restored(norm_first, activation, assert_same_state, full_state):
    encoder = tiny_encoder(norm_first, activation, bias=True)
    x = torch.randn(2, 5, 8)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[1, -1] = True
    expected = encoder(x, src_key_padding_mask=mask)
    before = full_state(encoder)
    functions = [layer.activation for layer in encoder.layers]
    canonizers = auto_canonizers(encoder)
    assert [type(c) for c in canonizers] == [MultiheadAttentionCanonizer, TransformerLayerActivationCanonizer]
    instances = [instance for canonizer in canonizers for instance in canonizer.apply(encoder)]
    try:
        if not isinstance(activation, torch.nn.Module):
            assert all(isinstance(layer.activation, torch.nn.Module) for layer in encoder.layers)
        output = encoder(x.clone().requires_grad_(True), src_key_padding_mask=mask)
    finally:
        remove_all(instances)
    torch.testing.assert_close(output, expected, rtol=1e-12, atol=1e-12)
    assert [layer.activation for layer in encoder.layers] == functions
    assert_same_state(before, full_state(encoder))


def test_unknown_activation_function_is_left_with_a_warning():
    layer = torch.nn.TransformerEncoderLayer(4, 2, activation=lambda x: x * torch.sigmoid(x))
    with pytest.warns(UserWarning, match="plain gradient"):
        assert TransformerLayerActivationCanonizer().apply(layer) == []


@pytest.mark.parametrize("norm_first, batch_first", [(True, True), (False, False)])
def test_cp_lrp_conserves_on_bias_free_transformer_encoders(norm_first, batch_first):
    encoder = tiny_encoder(norm_first, "gelu", batch_first=batch_first)
    head = torch.nn.Linear(8, 3, bias=False)
    x = torch.randn(2, 5, 8) if batch_first else torch.randn(5, 2, 8)
    x.requires_grad_(True)
    model = torch.nn.Sequential(encoder, head)
    with CPLRP(epsilon=1e-12).context(model):
        output = model(x)
        score = output.sum(dim=1 if batch_first else 0)[:, 0].sum()
        g_x, = torch.autograd.grad(score, x)
    torch.testing.assert_close((x * g_x).sum(), score.detach(), rtol=1e-6, atol=0)


def test_auto_canonizer_registry_is_extensible():
    class Marker(torch.nn.Module):
        pass

    class MarkerCanonizer(MultiheadAttentionCanonizer):
        pass

    assert {"torch.nn.MultiheadAttention", "torch.nn.Transformer*Layer activation"} <= {
        entry.name for entry in registered_auto_canonizers()
    }
    register_auto_canonizer("test marker", lambda module: isinstance(module, Marker), MarkerCanonizer)
    try:
        assert [type(c) for c in auto_canonizers(torch.nn.Sequential(Marker()))] == [MarkerCanonizer]
        assert auto_canonizers(torch.nn.Linear(2, 2)) == []
    finally:
        from lrp_lightning import auto_canonizers as registry

        del registry._REGISTRY["test marker"]


def test_importing_lrp_lightning_changes_no_class():
    script = textwrap.dedent(
        """
        import torch, torch.nn.functional as F, torchvision.models.vision_transformer as vt
        classes = [torch.nn.Module, torch.nn.MultiheadAttention, torch.nn.Linear, torch.nn.LayerNorm,
                   torch.nn.Softmax, torch.nn.GELU, torch.nn.TransformerEncoderLayer, vt.EncoderBlock,
                   vt.VisionTransformer, torch.Tensor]
        def snapshot():
            return [dict(vars(c)) for c in classes] + [dict(vars(F)), dict(vars(torch))]
        before = snapshot()
        import lrp_lightning, lrp_lightning.composites, lrp_lightning.attribution, lrp_lightning.torchvision
        import lrp_lightning.transformer.attention, lrp_lightning.auto_canonizers, lrp_lightning.auto_canonizers as registry
        registry.registered_auto_canonizers()
        after = snapshot()
        # classes: nothing added, removed or replaced; modules: nothing replaced or removed (submodules may be added)
        changed = [(i, k) for i, (b, a) in enumerate(zip(before, after)) for k in (set(b) | set(a) if i < len(classes) else set(b))
                   if b.get(k) is not a.get(k)]
        print(changed)
        assert not changed
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_transformer_decoder_layer_with_cross_attention_is_canonized(assert_same_state, full_state):
    torch.manual_seed(2)
    layer = torch.nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True).eval()
    target, memory = torch.randn(2, 4, 8), torch.randn(2, 6, 8)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(4)
    expected = layer(target, memory, tgt_mask=causal, tgt_is_causal=True)
    before = full_state(layer)
    with AttnLRP().context(layer):
        assert isinstance(layer.activation, torch.nn.ReLU)
        inputs = target.clone().requires_grad_(True)
        output = layer(inputs, memory, tgt_mask=causal, tgt_is_causal=True)
        torch.autograd.grad(output.sum(), inputs)
    torch.testing.assert_close(output.detach(), expected, rtol=1e-12, atol=1e-12)
    assert_same_state(before, full_state(layer))


def test_composites_warn_about_attention_their_canonizers_left_fused(tiny_vit):
    model = tiny_vit()
    with pytest.warns(UserWarning, match=r"not canonized.*encoder_layer_0.self_attention \(torch.nn.MultiheadAttention\)"):
        with CPLRP(canonizers=[]).context(model):
            pass
    encoder = tiny_encoder(True, "gelu")
    with pytest.warns(UserWarning, match=r"layers.0 \(torch.nn.Transformer\*Layer activation\)"):
        with AttnLRP(canonizers=[MultiheadAttentionCanonizer()]).context(encoder):
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with AttnLRP().context(model), CPLRP().context(encoder):
            pass
