"""LXT 2.1's side of :mod:`benchmarks.transformers`, run by the python of LXT's own virtualenv.

LXT patches classes globally, so each method runs in a fresh process:
``<lxt python> -m benchmarks.lxt_transformers MODEL METHOD`` prints the median milliseconds of one
explanation (``gradient``: unpatched forward and backward to the input embedding or image;
``attn_lrp``/``cp_lrp``: after ``lxt.efficient.monkey_patch`` with LXT's map for the model, for the
ViT its documented recipe — ``monkey_patch(vision_transformer)``, ``monkey_patch_zennit`` and
zennit's Epsilon on ``nn.Linear``/``nn.Conv2d``, which is CP-LRP). The models and inputs are those
of :func:`benchmarks.transformers.build`, explained by its ``plain_gradient`` (with LXT's patches
in place); lrp_lightning is never imported here.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib

import torch

from benchmarks.common import time_ms
from benchmarks.transformers import build, plain_gradient


def patch(model_name: str, method: str) -> contextlib.AbstractContextManager:
    """Apply LXT's patches for ``method``; returns the zennit composite context for the ViT recipe."""
    from lxt.efficient import monkey_patch

    if model_name == "gpt2":
        modeling = importlib.import_module("transformers.models.gpt2.modeling_gpt2")
        maps = importlib.import_module("lxt.efficient.models.gpt2")
        monkey_patch(modeling, maps.attnLRP if method == "attn_lrp" else maps.cp_LRP)
        return contextlib.nullcontext()
    import zennit.rules
    from lxt.efficient import monkey_patch_zennit
    from torchvision.models import vision_transformer
    from zennit.composites import LayerMapComposite

    monkey_patch(vision_transformer)
    monkey_patch_zennit()
    return LayerMapComposite([(torch.nn.Conv2d, zennit.rules.Epsilon(1e-6)), (torch.nn.Linear, zennit.rules.Epsilon(1e-6))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", choices=("vit_b_16", "gpt2"))
    parser.add_argument("method", choices=("gradient", "attn_lrp", "cp_lrp"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--sequence", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    composite = contextlib.nullcontext() if args.method == "gradient" else patch(args.model, args.method)
    model, data = build(args.model, args.batch, args.sequence, torch.device("cpu"))
    context = composite.context(model) if hasattr(composite, "context") else composite
    with context:
        run = lambda: plain_gradient(model, data["inputs"], data["target"])  # noqa: E731
        print(time_ms(run, torch.device("cpu"), warmup=1, repeats=args.repeats))


if __name__ == "__main__":
    main()
