"""Canonizers for Hugging Face transformers models: BERT, GPT-2 and Llama-style decoders (Llama, Qwen2, Mistral).

transformers is never imported here: modules are recognised by the name and defining module of
their class, so importing :mod:`lrp_lightning` (or this module) changes nothing in transformers.
Every canonizer works on instances only and is undone exactly on exit:

- :class:`EagerAttentionImplementation` sets ``_attn_implementation = "eager"`` on every config of
  the model (its own and the sub-configs) whose implementation is neither "eager" nor "sdpa"
  (flash or flex attention, say), so that the model builds masks for, and its attention modules
  take, a path the rules can reach; the previous values are put back.
- :class:`HuggingFaceAttentionCanonizer` makes ``softmax(Q K^T) V`` of the attention modules explicit
  (:mod:`lrp_lightning.transformer.eager_attention`): a model with SDPA attention keeps the fused kernel (one
  :class:`~lrp_lightning.layer.ScaledDotProductAttention` per module), one with eager attention
  gets explicit products and softmax; projections, rotary embeddings, grouped-query key/value
  repetition, caches, causal and padding masks stay the model's own code.
- :class:`GatedMLPCanonizer` gives the gated MLP of Llama-style decoders,
  ``down(act(gate(x)) * up(x))``, an explicit :class:`~lrp_lightning.layer.GatedMul` for the
  product (uniform rule under AttnLRP; the gate held constant under CP-LRP).
- :class:`RMSNormCanonizer` gives their RMSNorm a forward that normalises in the wider of float32
  and the input's dtype: the same operations as the original for float32 and half precision, and
  no float32 round trip for float64 inputs.

Linear layers, GPT-2's ``Conv1D``, LayerNorm, RMSNorm and the activation modules
(``transformers.activations``) get their rules from the composites directly. :func:`canonizers`
returns what a model needs; the composites' ``canonizers="auto"`` finds them through
:mod:`lrp_lightning.auto_canonizers`.
"""
from __future__ import annotations

from typing import Optional

import torch

from lrp_lightning.auto_canonizers import register_auto_canonizer
from lrp_lightning.canonizers import AttributeCanonizer, Canonizer, CompositeCanonizer
from lrp_lightning.transformer.eager_attention import ExplicitAttentionCanonizer
from lrp_lightning.layer import GatedMul

_MISSING = object()
_IMPLEMENTATION_KEY = "_attn_implementation_internal"
# implementations whose attention the canonizer reaches as they are (None: the library's default, SDPA)
_REACHABLE_IMPLEMENTATIONS = ("eager", "sdpa", None)

# Attention modules whose eager path computes softmax(Q K^T) V, by the module defining their class.
ATTENTION_CLASSES = {
    "transformers.models.bert.modeling_bert": ("BertSelfAttention", "BertSdpaSelfAttention"),
    "transformers.models.gpt2.modeling_gpt2": ("GPT2Attention", "GPT2SdpaAttention"),
    "transformers.models.llama.modeling_llama": ("LlamaAttention",),
    "transformers.models.qwen2.modeling_qwen2": ("Qwen2Attention",),
    "transformers.models.mistral.modeling_mistral": ("MistralAttention",),
}
GATED_MLP_CLASSES = {
    "transformers.models.llama.modeling_llama": ("LlamaMLP",),
    "transformers.models.qwen2.modeling_qwen2": ("Qwen2MLP",),
    "transformers.models.mistral.modeling_mistral": ("MistralMLP",),
}
RMS_NORM_CLASSES = {
    "transformers.models.llama.modeling_llama": ("LlamaRMSNorm",),
    "transformers.models.qwen2.modeling_qwen2": ("Qwen2RMSNorm",),
    "transformers.models.mistral.modeling_mistral": ("MistralRMSNorm",),
}


def _is_one_of(module: torch.nn.Module, classes: dict) -> bool:
    cls = type(module)
    return cls.__name__ in classes.get(cls.__module__, ())


def is_attention(module: torch.nn.Module) -> bool:
    """Whether ``module`` is a supported Hugging Face attention module (see ``ATTENTION_CLASSES``)."""
    return _is_one_of(module, ATTENTION_CLASSES)


def is_gated_mlp(module: torch.nn.Module) -> bool:
    """Whether ``module`` is the gated MLP of a supported Llama-style decoder."""
    return _is_one_of(module, GATED_MLP_CLASSES)


def is_rms_norm(module: torch.nn.Module) -> bool:
    """Whether ``module`` is the RMSNorm of a supported Llama-style decoder."""
    return _is_one_of(module, RMS_NORM_CLASSES)


def _configs(root_module: torch.nn.Module) -> list:
    """Every distinct transformers config reachable from the modules of ``root_module`` (sub-configs included)."""
    found: dict = {}
    pending = [vars(module).get("config") for module in root_module.modules()]
    while pending:
        config = pending.pop()
        if id(config) in found or _IMPLEMENTATION_KEY not in getattr(config, "__dict__", {}):
            continue
        found[id(config)] = config
        pending.extend(value for value in vars(config).values() if hasattr(value, "__dict__"))
    return list(found.values())


class EagerAttentionImplementation(Canonizer):
    """Select the eager attention implementation on every config of a model whose implementation the
    rules cannot reach, restored exactly on removal.

    The attention implementation (``config._attn_implementation``, stored as
    ``_attn_implementation_internal``) decides both the attention function and the form of the
    masks the model builds. "eager" computes ``softmax(Q K^T) V`` with ``torch.matmul`` and
    ``softmax``, "sdpa" with ``F.scaled_dot_product_attention``; both are left as they are, and
    :class:`HuggingFaceAttentionCanonizer` makes them explicit. Any other (flash or flex attention,
    a custom function) is set to "eager".
    """

    def __init__(self) -> None:
        self.saved: list = []

    def apply(self, root_module: torch.nn.Module) -> list:
        """Set ``"eager"`` on the configs of ``root_module`` with another implementation than eager or
        SDPA; return the one registered instance."""
        instance = EagerAttentionImplementation()
        for config in _configs(root_module):
            if vars(config).get(_IMPLEMENTATION_KEY) in _REACHABLE_IMPLEMENTATIONS:
                continue
            instance.saved.append((config, vars(config).get(_IMPLEMENTATION_KEY, _MISSING)))
            vars(config)[_IMPLEMENTATION_KEY] = "eager"
        return [instance]

    def remove(self) -> None:
        """Put every config's previous attention implementation back."""
        for config, value in reversed(self.saved):
            if value is _MISSING:
                vars(config).pop(_IMPLEMENTATION_KEY, None)
            else:
                vars(config)[_IMPLEMENTATION_KEY] = value
        self.saved = []


class HuggingFaceAttentionCanonizer(CompositeCanonizer):
    """Explicit attention in BERT, GPT-2, Llama, Qwen2 and Mistral: the fused kernel as a module
    (SDPA), or ``Q K^T``, softmax and ``weights V`` as modules (eager).

    Applies :class:`EagerAttentionImplementation` and an
    :class:`~lrp_lightning.transformer.eager_attention.ExplicitAttentionCanonizer` for the modules listed in
    ``ATTENTION_CLASSES``; the canonized model's outputs equal those of the original (for float64
    with eager attention, those of its SDPA path: eager's float32 softmax round trip is not repeated).
    """

    def __init__(self) -> None:
        super().__init__([EagerAttentionImplementation(), ExplicitAttentionCanonizer(is_attention)])


def _gated_mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.down_proj(self.canonizer_product(self.act_fn(self.gate_proj(x)), self.up_proj(x)))


class GatedMLPCanonizer(AttributeCanonizer):
    """Make the gate product of Llama-style MLPs, ``down(act(gate(x)) * up(x))``, an explicit :class:`GatedMul`.

    Each matching module gets a ``canonizer_product`` submodule and a forward of the same
    semantics that calls it, until removed.
    """

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name: str, module: torch.nn.Module) -> Optional[dict]:
        if not is_gated_mlp(module):
            return None
        return {"canonizer_product": GatedMul(), "forward": _gated_mlp_forward.__get__(module)}


def _rms_norm_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    input_dtype = hidden_states.dtype
    wide = hidden_states.to(torch.promote_types(input_dtype, torch.float32))
    variance = wide.pow(2).mean(-1, keepdim=True)
    return self.weight * (wide * torch.rsqrt(variance + self.variance_epsilon)).to(input_dtype)


class RMSNormCanonizer(AttributeCanonizer):
    """Give Llama-style RMSNorms a forward without the float32 round trip for float64 inputs.

    ``y = w * x / sqrt(mean(x^2) + eps)``, computed in ``promote_types(x.dtype, float32)`` and cast
    back before the weight, as the original does for float32 and half precision inputs (the same
    operations in the same order); float64 inputs stay in float64 throughout.
    """

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name: str, module: torch.nn.Module) -> Optional[dict]:
        return {"forward": _rms_norm_forward.__get__(module)} if is_rms_norm(module) else None


def canonizers() -> list:
    """Return fresh canonizers for every supported Hugging Face transformers module kind.

    Returns
    -------
    list of Canonizer
        Attention (with the eager implementation), gated MLP products and RMSNorm; each applies
        only where it finds its modules.
    """
    return [HuggingFaceAttentionCanonizer(), GatedMLPCanonizer(), RMSNormCanonizer()]


register_auto_canonizer("transformers attention", is_attention, HuggingFaceAttentionCanonizer)
register_auto_canonizer("transformers gated MLP", is_gated_mlp, GatedMLPCanonizer)
register_auto_canonizer("transformers RMSNorm", is_rms_norm, RMSNormCanonizer)
