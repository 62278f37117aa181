"""Tiny transformer models for the transformer tests: rebuilt from the LXT golden files or made from scratch
(exposed as fixtures by ``tests/conftest.py``)."""
from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

GOLDEN_DIR = Path(__file__).parents[1] / "golden"
GOLDEN_CASES = sorted(path.stem for path in GOLDEN_DIR.glob("*.pt"))

_LANGUAGE_MODELS = {
    "bert": (transformers.BertConfig, transformers.BertForSequenceClassification),
    "gpt2": (transformers.GPT2Config, transformers.GPT2LMHeadModel),
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
}


@functools.lru_cache(maxsize=None)
def load_golden(name: str) -> dict:
    """The golden file ``tests/golden/<name>.pt`` written by ``scripts/make_lxt_golden.py``."""
    return torch.load(GOLDEN_DIR / f"{name}.pt", weights_only=False)


def language_model(kind: str, config_dict: dict, implementation: str, state_dict=None) -> torch.nn.Module:
    """A float64 model of ``kind`` in eval mode with the given attention implementation (and weights)."""
    config_class, model_class = _LANGUAGE_MODELS[kind]
    model = model_class._from_config(config_class.from_dict(config_dict), attn_implementation=implementation)
    model = model.to(torch.float64).eval()
    if state_dict is not None:
        model.load_state_dict(state_dict)
    assert model.config._attn_implementation == implementation
    return model


def golden_language_model(golden: dict, implementation: str) -> torch.nn.Module:
    """The golden file's model, rebuilt with the installed transformers."""
    return language_model(golden["model"], golden["config"], implementation, golden["state_dict"])


def tiny_language_model(kind: str, implementation: str = "eager", seed: int = 0, **overrides) -> torch.nn.Module:
    """A random tiny float64 model of ``kind`` (weights at a scale where attention is far from uniform)."""
    sizes = dict(vocab_size=48, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, initializer_range=0.3)
    extra = {
        "bert": dict(intermediate_size=48, max_position_embeddings=16, num_labels=3),
        "gpt2": dict(n_positions=16, n_embd=32, n_layer=2, n_head=4),
        "llama": dict(intermediate_size=48, num_key_value_heads=2, max_position_embeddings=16),
        "qwen2": dict(intermediate_size=48, num_key_value_heads=2, max_position_embeddings=16),
        "mistral": dict(intermediate_size=48, num_key_value_heads=2, max_position_embeddings=16, sliding_window=4),
    }[kind]
    torch.manual_seed(seed)
    config = _LANGUAGE_MODELS[kind][0](**{**sizes, **extra, **overrides}).to_dict()
    return language_model(kind, config, implementation)


def torchvision_vit(golden: dict) -> torch.nn.Module:
    """The golden torchvision ``VisionTransformer`` (float64, eval)."""
    from torchvision.models.vision_transformer import VisionTransformer

    model = VisionTransformer(**golden["arguments"]).double().eval()
    model.load_state_dict(golden["state_dict"])
    return model


def _timm_name(torchvision_name: str) -> str:
    """The timm ``VisionTransformer`` parameter holding the torchvision ViT parameter of this name."""
    replacements = [
        ("conv_proj.", "patch_embed.proj."),
        ("class_token", "cls_token"),
        ("encoder.pos_embedding", "pos_embed"),
        ("encoder.layers.encoder_layer_", "blocks."),
        ("ln_1.", "norm1."),
        ("ln_2.", "norm2."),
        ("self_attention.in_proj_", "attn.qkv."),
        ("self_attention.out_proj.", "attn.proj."),
        ("mlp.0.", "mlp.fc1."),
        ("mlp.3.", "mlp.fc2."),
        ("encoder.ln.", "norm."),
        ("heads.head.", "head."),
    ]
    for old, new in replacements:
        torchvision_name = torchvision_name.replace(old, new)
    return torchvision_name


def timm_vit_from_torchvision(golden: dict, fused_attn: bool = True) -> torch.nn.Module:
    """timm's ``VisionTransformer`` of the same architecture holding the golden torchvision ViT's weights
    (skips the calling test where timm is missing: only the timm tests need it)."""
    VisionTransformer = pytest.importorskip("timm.models.vision_transformer").VisionTransformer

    arguments = golden["arguments"]
    model = VisionTransformer(
        img_size=arguments["image_size"],
        patch_size=arguments["patch_size"],
        num_classes=arguments["num_classes"],
        embed_dim=arguments["hidden_dim"],
        depth=arguments["num_layers"],
        num_heads=arguments["num_heads"],
        mlp_ratio=arguments["mlp_dim"] / arguments["hidden_dim"],
        qkv_bias=True,
        global_pool="token",
    ).double().eval()
    model.load_state_dict({_timm_name(name): value for name, value in golden["state_dict"].items()})
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = fused_attn
    return model


def token_relevance(model: torch.nn.Module, composite, inputs: dict, target: torch.Tensor, last_position: bool):
    """Explain ``target`` with ``composite`` as LXT does: relevance ``(N, T)`` of the input embeddings.

    Returns the logits, the token relevance ``sum_h e * g`` and the total relevance (over the batch)
    of GPT-2's additive position embeddings (zero for other models).
    """
    inputs = dict(inputs)
    input_ids = inputs.pop("input_ids")
    captured = {}

    def keep(module, args, output):
        output.retain_grad()
        captured["positions"] = output

    transformer = getattr(model, "transformer", None)
    handle = transformer.wpe.register_forward_hook(keep) if transformer is not None else None
    try:
        with composite.context(model):
            embedded = model.get_input_embeddings()(input_ids).detach().requires_grad_()
            logits = model(inputs_embeds=embedded, **inputs).logits
            explained = logits[:, -1] if last_position else logits
            explained.gather(1, target[:, None]).sum().backward()
    finally:
        if handle is not None:
            handle.remove()
    relevance = (embedded * embedded.grad).sum(-1).detach()
    positions = captured.get("positions")
    position_total = (positions * positions.grad).sum().item() if positions is not None else 0.0
    return logits.detach(), relevance, position_total


def image_relevance(model: torch.nn.Module, composite, image: torch.Tensor, target: torch.Tensor):
    """Logits and the relevance ``x * g`` of ``image`` for ``target`` under ``composite``."""
    with composite.context(model):
        image = image.detach().clone().requires_grad_()
        logits = model(image)
        logits.gather(1, target[:, None]).sum().backward()
    return logits.detach(), (image * image.grad).detach()


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``max |actual - expected| / max |expected|``."""
    return ((actual - expected).abs().max() / expected.abs().max()).item()
