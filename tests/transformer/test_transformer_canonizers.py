"""The Hugging Face and timm canonizers: same outputs as the original model, exact restoration, clear errors."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lrp_lightning.transformer import huggingface
from lrp_lightning.transformer import timm as lrp_timm
from lrp_lightning.auto_canonizers import auto_canonizers
from lrp_lightning.canonizers import CompositeCanonizer
from lrp_lightning.composites import AttnLRP, CPLRP
from lrp_lightning.transformer.eager_attention import ExplicitAttentionCanonizer
from lrp_lightning.layer import GatedMul, MatMul, ScaledDotProductAttention

LANGUAGE_MODELS = [(kind, implementation) for kind in ("bert", "gpt2", "llama", "qwen2", "mistral") for implementation in ("eager", "sdpa")]
LLAMA_STYLE = ("llama", "qwen2", "mistral")


def _inputs(kind: str) -> dict:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, 48, (2, 8), generator=generator)
    attention_mask = torch.ones(2, 8, dtype=torch.long)
    if kind == "bert":
        attention_mask[1, -3:] = 0  # right padding
    else:
        attention_mask[1, :3] = 0  # left padding
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _logits(model, inputs: dict, canonizers=()) -> torch.Tensor:
    instances = CompositeCanonizer(list(canonizers)).apply(model)
    try:
        with torch.no_grad():
            return model(**inputs).logits
    finally:
        for instance in reversed(instances):
            instance.remove()


def _kept(logits: torch.Tensor, inputs: dict, kind: str) -> torch.Tensor:
    """The logits of unpadded positions (a padded query's output is not defined alike by all implementations)."""
    return logits if kind == "bert" else logits[inputs["attention_mask"].bool()]


def _shallow(mapping: dict) -> dict:
    return {key: dict(value) if isinstance(value, dict) else value for key, value in mapping.items()}


def snapshot(model: torch.nn.Module) -> dict:
    """Everything a canonizer or composite could leave behind: instance and class attributes, hooks,
    submodules, parameters and buffers (objects and values), configs."""
    configs = {id(module.config): module.config for module in model.modules() if "config" in vars(module)}
    return {
        "modules": {name: _shallow(vars(module)) for name, module in model.named_modules()},
        "classes": {cls: dict(vars(cls)) for cls in {type(module) for module in model.modules()}},
        "values": {name: tensor.detach().clone() for name, tensor in model.state_dict(keep_vars=True).items()},
        "grads": {name: param.grad for name, param in model.named_parameters()},
        "configs": {key: _shallow(vars(config)) for key, config in configs.items()},
    }


def _same(before, after) -> bool:
    if isinstance(before, dict):
        return before.keys() == after.keys() and all(_same(before[key], after[key]) for key in before)
    if isinstance(before, (bool, int, float, str, type(None))):
        return before == after
    return before is after


def assert_restored(model: torch.nn.Module, before: dict) -> None:
    after = snapshot(model)
    for key in ("modules", "classes", "grads", "configs"):
        assert _same(before[key], after[key]), f"{key} changed"
    assert before["values"].keys() == after["values"].keys()
    for name, value in before["values"].items():
        assert torch.equal(value, after["values"][name]), name
    assert torch._C._len_torch_function_stack() == 0


@pytest.mark.parametrize("kind, implementation", LANGUAGE_MODELS)
def test_canonized_model_computes_the_same_outputs(
    float64_default, kind, implementation, language_model, tiny_language_model
):
    """float64: equal to the original to float64 precision (Llama-style: to the SDPA path, as eager and the
    original RMSNorm round-trip through float32); float32: bitwise equal to the original (the canonized
    model keeps its attention implementation, SDPA's fused kernel included)."""
    model = tiny_language_model(kind, implementation)
    config, weights = model.config.to_dict(), model.state_dict()
    inputs = _inputs(kind)
    canonizers = huggingface.canonizers()
    reference_implementation = "sdpa" if kind in LLAMA_STYLE else implementation
    reference = _logits(language_model(kind, config, reference_implementation, weights), inputs)
    without_rms_norm = [c for c in canonizers if not isinstance(c, huggingface.RMSNormCanonizer)]
    canonized = _logits(model, inputs, without_rms_norm)
    assert ((_kept(canonized, inputs, kind) - _kept(reference, inputs, kind)).abs().max() / reference.abs().max()) < 1e-13
    full = _logits(model, inputs, canonizers)
    assert ((_kept(full, inputs, kind) - _kept(reference, inputs, kind)).abs().max() / reference.abs().max()) < 1e-6

    original32 = language_model(kind, config, implementation, weights).float()
    canonized32 = model.float()
    assert torch.equal(_logits(canonized32, inputs, canonizers), _logits(original32, inputs))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_rms_norm_forward(dtype, tiny_language_model):
    """Same operations as the original for float32 and bfloat16; float64 without the float32 round trip."""
    model = tiny_language_model("llama").to(dtype)
    norm = model.model.norm
    hidden = torch.randn(3, 5, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(dtype)
    with torch.no_grad():
        original = norm(hidden)
        instances = huggingface.RMSNormCanonizer().apply(model)
        canonized = norm(hidden)
        for instance in instances:
            instance.remove()
    if dtype is torch.float64:
        exact = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon) * norm.weight
        assert (canonized - exact).abs().max() < 1e-15
        assert (original - exact).abs().max() > 1e-10, "the original's float32 round trip is what the canonizer avoids"
    else:
        assert torch.equal(canonized, original)


@pytest.mark.parametrize("kind, implementation", LANGUAGE_MODELS)
@pytest.mark.parametrize("composite", [AttnLRP, CPLRP])
def test_composite_restores_the_model_exactly(
    float64_default, kind, implementation, composite, tiny_language_model, token_relevance
):
    model = tiny_language_model(kind, implementation)
    inputs = _inputs(kind)
    before = snapshot(model)
    instance = composite(epsilon=1e-10)
    with instance.context(model):
        attentions = [module for module in model.modules() if huggingface.is_attention(module)]
        assert attentions and all(isinstance(module.canonizer_scores, MatMul) for module in attentions)
        assert all(isinstance(module.canonizer_attention, ScaledDotProductAttention) for module in attentions)
        assert model.config._attn_implementation == implementation
        named = {name.rsplit(".", 1)[-1] for name in instance.rule_map}
        assert {"canonizer_scores", "canonizer_context", "canonizer_attention"} <= named
        if kind in LLAMA_STYLE:
            assert all(isinstance(module.canonizer_product, GatedMul) for module in model.modules() if huggingface.is_gated_mlp(module))
    assert model.config._attn_implementation == implementation
    assert_restored(model, before)
    token_relevance(model, instance, inputs, torch.tensor([1, 2]), last_position=kind != "bert")
    model.zero_grad(set_to_none=True)
    assert_restored(model, before)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "bert"])
def test_restored_after_an_exception_inside_attention(float64_default, kind, tiny_language_model):
    """An error raised in the middle of a canonized attention forward leaves nothing behind."""
    model = tiny_language_model(kind, "sdpa")
    before = snapshot(model)
    last_attention = [module for module in model.modules() if huggingface.is_attention(module)][-1]

    def fail(module, args, kwargs, output):
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        with AttnLRP().context(model):
            handle = last_attention.canonizer_attention.register_forward_hook(fail, with_kwargs=True)
            model(**_inputs(kind))
    handle.remove()
    assert_restored(model, before)


@pytest.mark.parametrize("attention", ["none", "fused twice", "fused then matmul", "two products"])
def test_unsupported_attention_raises_a_clear_error_and_restores(attention):
    class UnsupportedAttention(torch.nn.Module):
        def forward(self, q):
            if attention == "none":
                return q.exp()
            if attention == "fused twice":
                fused = torch.nn.functional.scaled_dot_product_attention(q, q, q)
                return torch.nn.functional.scaled_dot_product_attention(fused, q, q)
            if attention == "fused then matmul":
                return torch.nn.functional.scaled_dot_product_attention(q, q, q) @ q.transpose(-2, -1)
            return (q @ q.transpose(-2, -1)) @ q

    model = torch.nn.Sequential(UnsupportedAttention())
    before = snapshot(model)
    canonizer = ExplicitAttentionCanonizer(lambda module: isinstance(module, UnsupportedAttention))
    calls = {"none": "no attention", "fused twice": "fused, fused", "fused then matmul": "fused, matmul",
             "two products": "matmul, matmul"}[attention]
    with pytest.raises(RuntimeError, match=f"cannot make the attention of UnsupportedAttention explicit.*computed {calls} where"):
        with AttnLRP(canonizers=[canonizer]).context(model):
            model(torch.randn(1, 2, 3, 4, requires_grad=True))
    assert_restored(model, before)


def test_auto_canonizers_find_the_library_canonizers(load_golden, timm_vit_from_torchvision, tiny_language_model):
    kinds = {type(c) for c in auto_canonizers(tiny_language_model("llama"))}
    assert kinds == {huggingface.HuggingFaceAttentionCanonizer, huggingface.GatedMLPCanonizer, huggingface.RMSNormCanonizer}
    assert {type(c) for c in auto_canonizers(tiny_language_model("gpt2"))} == {huggingface.HuggingFaceAttentionCanonizer}
    golden = load_golden("vit_cp_lrp")
    assert {type(c) for c in auto_canonizers(timm_vit_from_torchvision(golden))} == {lrp_timm.TimmAttentionCanonizer}


@pytest.mark.parametrize("fused_attn", [True, False])
def test_timm_canonizer_same_outputs_and_exact_restoration(fused_attn, load_golden, timm_vit_from_torchvision):
    golden = load_golden("vit_cp_lrp")
    model = timm_vit_from_torchvision(golden, fused_attn=fused_attn)
    image = golden["inputs"]["image"]
    before = snapshot(model)
    with torch.no_grad():
        original = model(image)
        instances = lrp_timm.TimmAttentionCanonizer().apply(model)
        assert all(module.fused_attn is fused_attn for module in model.modules() if lrp_timm.is_attention(module))
        canonized = model(image)
        for instance in reversed(instances):
            instance.remove()
    assert torch.equal(canonized, original)
    with pytest.raises(RuntimeError):
        with CPLRP().context(model):
            model(image[:, :2])
    assert_restored(model, before)


def test_importing_changes_nothing_in_the_libraries():
    """Importing lrp_lightning (and its transformers/timm modules) imports neither library."""
    code = (
        "import sys, lrp_lightning, lrp_lightning.transformer.huggingface, lrp_lightning.transformer.timm, lrp_lightning.composites\n"
        "from lrp_lightning.auto_canonizers import registered_auto_canonizers\n"
        "registered_auto_canonizers()\n"
        "print(sorted(name for name in ('transformers', 'timm') if name in sys.modules))\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert result.stdout.strip() == "[]"
