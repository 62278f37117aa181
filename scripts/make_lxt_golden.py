"""Generate the LXT 2.1 golden files in tests/golden/ (run by ``make golden`` inside .venv-lxt).

LXT (the AttnLRP authors' reference code) patches classes of torch, zennit and transformers
globally and needs transformers 4.52.4, so it runs here, in its own virtualenv and in one fresh
process per case, never in the test process. It is used only through its documented public
interface: ``lxt.efficient.monkey_patch(module[, patch_map])`` with the ``attnLRP``/``cp_LRP``
maps of ``lxt.efficient.models.<model>``, ``monkey_patch_zennit`` with zennit's Epsilon rule for
the torchvision ViT, and relevance read off as ``input * input.grad``.

Each case builds a tiny random model (fixed seed, float64, weights drawn at unit scale so that
attention is far from uniform), runs LXT, and stores the model's config and state_dict, the
inputs, the targets, LXT's logits and LXT's relevance per attention implementation in one ``.pt``
file. The tests rebuild the model with the installed (newest) transformers and compare.

Float64 needs one intervention on the LXT side: LXT's RMSNorm and its eager attention softmax
round-trip through float32 even for float64 inputs, which caps agreement near 1e-7. While those
modules run (and during the backward pass) a float32 cast of a float64 tensor is kept in float64.
Nothing else is touched; rotary embeddings keep their float32 cos/sin on both sides.

Usage: ``python scripts/make_lxt_golden.py [--out tests/golden] [--case NAME]``.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import subprocess
import sys
import threading
from pathlib import Path

import torch

SEED = 0
BATCH, SEQUENCE = 2, 7
VOCAB = 64

# One golden file per (model, method); each lists the attention implementations it holds.
CASES = {
    "vit_cp_lrp": ("vit", "cp_lrp", ["torchvision"]),
    "bert_attn_lrp": ("bert", "attn_lrp", ["eager", "sdpa"]),
    "gpt2_attn_lrp": ("gpt2", "attn_lrp", ["eager", "sdpa"]),
    "gpt2_cp_lrp": ("gpt2", "cp_lrp", ["eager", "sdpa"]),
    "llama_attn_lrp": ("llama", "attn_lrp", ["eager", "sdpa"]),
    "llama_cp_lrp": ("llama", "cp_lrp", ["eager", "sdpa"]),
}

# LXT's linear layers carry no stabiliser (LRP-0); the ViT recipe puts zennit's Epsilon on them.
EPSILON = {"vit": 1e-9, "bert": 1e-10, "gpt2": 1e-10, "llama": 1e-10}

_KEEP_FLOAT64 = threading.local()


def _keeping() -> bool:
    return getattr(_KEEP_FLOAT64, "on", False)


def _wide(dtype, tensor):
    return torch.float64 if (dtype is torch.float32 and tensor.dtype is torch.float64 and _keeping()) else dtype


def _install_float64_keepers() -> None:
    """Make float32 casts of float64 tensors no-ops while ``_KEEP_FLOAT64.on`` (this process only)."""
    original_to, original_float, original_type = torch.Tensor.to, torch.Tensor.float, torch.Tensor.type
    original_softmax = torch.nn.functional.softmax

    def to(self, *args, **kwargs):
        args = tuple(_wide(a, self) if isinstance(a, torch.dtype) else a for a in args)
        if "dtype" in kwargs:
            kwargs["dtype"] = _wide(kwargs["dtype"], self)
        return original_to(self, *args, **kwargs)

    def float_(self, *args, **kwargs):
        return self if (self.dtype is torch.float64 and _keeping()) else original_float(self, *args, **kwargs)

    def type_(self, dtype=None, *args, **kwargs):
        if isinstance(dtype, torch.dtype):
            dtype = _wide(dtype, self)
        return original_type(self, dtype, *args, **kwargs) if dtype is not None else original_type(self)

    def softmax(input, dim=None, _stacklevel=3, dtype=None):
        return original_softmax(input, dim=dim, dtype=_wide(dtype, input) if dtype is not None else None)

    torch.Tensor.to, torch.Tensor.float, torch.Tensor.type = to, float_, type_
    torch.nn.functional.softmax = softmax


@contextlib.contextmanager
def keep_float64():
    """Within the block (this thread), float32 casts of float64 tensors keep float64."""
    previous = _keeping()
    _KEEP_FLOAT64.on = True
    try:
        yield
    finally:
        _KEEP_FLOAT64.on = previous


def _run_keeping_float64(cls) -> None:
    """Wrap ``cls.forward`` (already patched by LXT) so that it runs without float32 round trips."""
    forward = cls.forward

    @functools.wraps(forward)
    def wrapped(self, *args, **kwargs):
        with keep_float64():
            return forward(self, *args, **kwargs)

    cls.forward = wrapped


def _randomize(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Unit-scale random weights: N(0, 1/fan_in) tensors, norm weights 1 + N(0, 0.1²), other vectors N(0, 0.1²)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            if param.dim() >= 2:
                param.copy_(noise / param[0].numel() ** 0.5)
            elif name.endswith("weight") and any("norm" in part.lower() or part.startswith("ln") for part in name.split(".")):
                param.copy_(1 + 0.1 * noise)
            else:
                param.copy_(0.1 * noise)


def _tokens(generator: torch.Generator) -> dict:
    input_ids = torch.randint(0, VOCAB, (BATCH, SEQUENCE), generator=generator)
    attention_mask = torch.ones(BATCH, SEQUENCE, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _config(model: str):
    import transformers

    if model == "bert":
        return transformers.BertConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
            max_position_embeddings=16, type_vocab_size=2, num_labels=3, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
    if model == "gpt2":
        return transformers.GPT2Config(
            vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
    return transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=16, rms_norm_eps=1e-6, tie_word_embeddings=False,
    )


def _model_class(model: str):
    import transformers

    return {
        "bert": transformers.BertForSequenceClassification,
        "gpt2": transformers.GPT2LMHeadModel,
        "llama": transformers.LlamaForCausalLM,
    }[model]


def _patch_lxt(model: str, method: str) -> None:
    """``monkey_patch`` the transformers module of ``model`` with LXT's map for ``method`` (documented usage)."""
    from lxt.efficient import monkey_patch

    modeling = importlib.import_module(f"transformers.models.{model}.modeling_{model}")
    maps = importlib.import_module(f"lxt.efficient.models.{model}")
    monkey_patch(modeling, maps.attnLRP if method == "attn_lrp" else maps.cp_LRP, verbose=True)
    if model == "llama":
        _run_keeping_float64(modeling.LlamaRMSNorm)
        _run_keeping_float64(modeling.LlamaAttention)


def _language_case(model: str, method: str, implementation: str) -> dict:
    _patch_lxt(model, method)
    generator = torch.Generator().manual_seed(SEED)
    config = _config(model)
    network = _model_class(model)._from_config(config, attn_implementation=implementation, torch_dtype=torch.float64)
    network.eval()
    if network.config._attn_implementation != implementation:
        raise RuntimeError(f"asked for {implementation}, got {network.config._attn_implementation}")
    _randomize(network, generator)
    inputs = _tokens(generator)
    if model == "bert":
        inputs["attention_mask"][1, -2:] = 0  # a padded second sample
        inputs["token_type_ids"] = (torch.arange(SEQUENCE) >= SEQUENCE // 2).long().expand(BATCH, -1).clone()
    embeddings = network.get_input_embeddings()(inputs["input_ids"]).detach().requires_grad_()
    model_inputs = {key: value for key, value in inputs.items() if key != "input_ids"}
    output = network(inputs_embeds=embeddings, use_cache=False, **model_inputs) if model != "bert" else network(
        inputs_embeds=embeddings, **model_inputs
    )
    logits = output.logits
    explained = logits if model == "bert" else logits[:, -1]
    target = explained.detach().argmax(-1)
    with keep_float64():
        explained.gather(1, target[:, None]).sum().backward()
    relevance = (embeddings * embeddings.grad).sum(-1).detach()
    return {
        "config": network.config.to_dict(),
        "state_dict": {key: value.detach().clone() for key, value in network.state_dict().items()},
        "inputs": inputs,
        "target": target,
        "logits": logits.detach(),
        "relevance": relevance,
    }


def _vit_case() -> dict:
    import zennit.rules
    from torchvision.models import vision_transformer
    from zennit.composites import LayerMapComposite

    from lxt.efficient import monkey_patch, monkey_patch_zennit

    monkey_patch(vision_transformer, verbose=True)
    monkey_patch_zennit(verbose=True)
    generator = torch.Generator().manual_seed(SEED)
    arguments = dict(image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5)
    network = vision_transformer.VisionTransformer(**arguments).double().eval()
    _randomize(network, generator)
    image = torch.randn(BATCH, 3, 16, 16, generator=generator, dtype=torch.float64).requires_grad_()
    epsilon = EPSILON["vit"]
    composite = LayerMapComposite(
        [(torch.nn.Conv2d, zennit.rules.Epsilon(epsilon)), (torch.nn.Linear, zennit.rules.Epsilon(epsilon))]
    )
    composite.register(network)
    try:
        logits = network(image)
        target = logits.detach().argmax(-1)
        logits.gather(1, target[:, None]).sum().backward()
    finally:
        composite.remove()
    return {
        "arguments": arguments,
        "state_dict": {key: value.detach().clone() for key, value in network.state_dict().items()},
        "inputs": {"image": image.detach()},
        "target": target,
        "logits": logits.detach(),
        "relevance": (image * image.grad).detach(),
    }


def run_case(name: str, implementation: str, out: Path) -> None:
    """Run one case in this (fresh) process and write its part file."""
    _install_float64_keepers()
    model, method, _ = CASES[name]
    result = _vit_case() if model == "vit" else _language_case(model, method, implementation)
    import lxt
    import transformers

    result.update(
        model=model,
        method=method,
        implementation=implementation,
        epsilon=EPSILON[model],
        versions={"lxt": getattr(lxt, "__version__", "2.1"), "transformers": transformers.__version__, "torch": torch.__version__},
    )
    torch.save(result, out / f".{name}.{implementation}.part")


def merge(name: str, out: Path) -> None:
    """Merge the per-implementation parts of one case into ``<name>.pt`` (shared model, inputs, targets)."""
    parts = [torch.load(out / f".{name}.{impl}.part", weights_only=False) for impl in CASES[name][2]]
    first = parts[0]
    for part in parts[1:]:
        for key in ("state_dict", "inputs"):
            for item, value in first[key].items():
                if not torch.equal(value, part[key][item]):
                    raise RuntimeError(f"{name}: {key}[{item}] differs between implementations")
    golden = {key: value for key, value in first.items() if key not in ("logits", "relevance", "target", "implementation")}
    golden["results"] = {
        part["implementation"]: {"target": part["target"], "logits": part["logits"], "relevance": part["relevance"]}
        for part in parts
    }
    torch.save(golden, out / f"{name}.pt")
    for impl in CASES[name][2]:
        (out / f".{name}.{impl}.part").unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "golden")
    parser.add_argument("--case", choices=sorted(CASES), help="run one case (all when omitted)")
    parser.add_argument("--implementation", help="internal: the attention implementation of a single-case run")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_default_dtype(torch.float64)
    if args.implementation:
        run_case(args.case, args.implementation, args.out)
        return
    for name in [args.case] if args.case else sorted(CASES):
        for implementation in CASES[name][2]:
            # LXT's patches are global and permanent: one fresh process per case and implementation
            subprocess.run(
                [sys.executable, __file__, "--out", str(args.out), "--case", name, "--implementation", implementation],
                check=True,
            )
        merge(name, args.out)
        print(f"wrote {args.out / (name + '.pt')}")


if __name__ == "__main__":
    main()
