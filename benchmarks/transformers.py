"""AttnLRP and CP-LRP against a plain input gradient (and LXT 2.1) on transformer models.

Models (random weights, eval mode, float32): torchvision ``vit_b_16`` on a batch of 224x224 images,
and a GPT-2-small-sized ``GPT2LMHeadModel`` (transformers' ``GPT2Config(n_layer=12, n_embd=768,
n_head=12)``) on token ids, explained at the last position. Methods:

- ``gradient``: one forward and one backward pass to the input (images) or the input embedding
  (tokens), times the input — the cost floor of any gradient-based explanation;
- ``attn_lrp``, ``cp_lrp``: ``Gradient(model, AttnLRP())`` / ``CPLRP()`` entered once (canonizers
  and hooks registered outside the timing) and called on the batch;
- ``lxt_attn_lrp``, ``lxt_cp_lrp``: LXT 2.1 on the same model in its own process and virtualenv
  (``--lxt-python``, default ``.venv-lxt/bin/python`` as ``make golden`` creates it; LXT patches
  classes globally, so it never runs in this process), with its own plain gradient for the ratio;
- ``*_same_venv``: the head-to-head with LXT on equal terms: our composites and LXT's, each in a
  fresh process of LXT's virtualenv (the same transformers release), the processes alternated
  ``--lxt-rounds`` times; medians of the per-process medians.

Times are medians of interleaved repeats (:func:`benchmarks.common.time_interleaved_ms`). Peak
memory is the allocator's high-water mark on CUDA; on the CPU each method runs once in a fresh
process and the growth of its peak resident set over the loaded model is reported, with glibc
mapping every allocation of 64 KiB or more on its own (``MALLOC_MMAP_THRESHOLD_``) so that freed
tensors leave the resident set as on a caching allocator's "allocated" count (``--no-memory``
skips that). Run::

    python -m benchmarks.transformers --device cpu          # 2 threads
    python -m benchmarks.transformers --device cuda
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from benchmarks.common import (
    MIB,
    format_table,
    machine_description,
    peak_memory_bytes,
    rss_peak_growth_bytes,
    time_interleaved_ms,
    time_ms,
)

OURS = ("attn_lrp", "cp_lrp")
METHODS = ("gradient",) + OURS
MODELS = ("vit_b_16", "gpt2")
DEFAULT_LXT_PYTHON = Path(".venv-lxt") / "bin" / "python"
# glibc serves every allocation of 64 KiB or more from its own mapping, returned on free, so the
# resident set follows the live tensors instead of the allocator's reuse of freed heap memory
LIVE_MEMORY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536"}
SEED = 0


def build(model_name: str, batch: int, sequence: int, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """The model (random weights, eval, float32) and its inputs: ``{"inputs": ..., "target": ...}``."""
    torch.manual_seed(SEED)
    if model_name == "vit_b_16":
        from torchvision.models import vit_b_16

        model = vit_b_16(weights=None)
        inputs = torch.randn(batch, 3, 224, 224)
        target = torch.randint(1000, (batch,))
    else:
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(n_layer=12, n_embd=768, n_head=12, n_positions=max(1024, sequence))
        model = GPT2LMHeadModel(config)
        inputs = torch.randint(config.vocab_size, (batch, sequence))
        target = torch.randint(config.vocab_size, (batch,))
    return model.eval().to(device), {"inputs": inputs.to(device), "target": target.to(device)}


def plain_gradient(model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Input (or input-embedding) times its plain gradient of the target logit."""
    if inputs.is_floating_point():
        leaf = inputs.detach().requires_grad_(True)
        logits = model(leaf)
    else:
        leaf = model.get_input_embeddings()(inputs).detach().requires_grad_(True)
        logits = model(inputs_embeds=leaf, use_cache=False).logits[:, -1]
    gradient, = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), leaf)
    return (leaf.detach() * gradient).detach()


@contextlib.contextmanager
def method_case(method: str, model: torch.nn.Module, data: dict) -> Iterator[Callable[[], Any]]:
    """A context yielding the timed call of ``method`` (composites registered on entry, removed on exit)."""
    if method == "gradient":
        yield lambda: plain_gradient(model, data["inputs"], data["target"])
        return
    from lrp_lightning.attribution import Gradient
    from lrp_lightning.composites import COMPOSITES

    with Gradient(model, COMPOSITES[method]()) as attributor:
        yield lambda: attributor(data["inputs"], data["target"])


def cpu_peak_growth_mib(model_name: str, method: str, batch: int, sequence: int) -> float:
    """Growth of the peak resident set (MiB) when ``method`` runs once in a fresh process."""
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.transformers", "--measure-peak", model_name, method,
         "--batch", str(batch), "--sequence", str(sequence)],
        capture_output=True, text=True, check=True, env={**os.environ, **LIVE_MEMORY_MALLOC},
    )
    return float(completed.stdout.strip().splitlines()[-1])


def measure_peak(model_name: str, method: str, batch: int, sequence: int) -> float:
    """In this (fresh) process: peak RSS growth in MiB of one call of ``method`` after loading the model."""
    torch.set_num_threads(2)
    model, data = build(model_name, batch, sequence, torch.device("cpu"))
    with method_case(method, model, data) as run:
        return rss_peak_growth_bytes(run) / MIB


def run_lxt(python: Path, model_name: str, method: str, batch: int, sequence: int, repeats: int) -> float:
    """LXT's median milliseconds for ``method`` in a fresh process of its own virtualenv."""
    return _median_ms_of_process(python, "benchmarks.lxt_transformers", model_name, method, batch, sequence, repeats)


def run_ours_in(python: Path, model_name: str, method: str, batch: int, sequence: int, repeats: int) -> float:
    """Our median milliseconds for ``method`` in a fresh process of another virtualenv (LXT's)."""
    return _median_ms_of_process(python, "benchmarks.transformers", model_name, method, batch, sequence, repeats, "--time-only")


def _median_ms_of_process(python: Path, script: str, model_name: str, method: str, batch: int, sequence: int,
                          repeats: int, *flags: str) -> float:
    completed = subprocess.run(
        [str(python), "-m", script, *flags, model_name, method, "--batch", str(batch), "--sequence", str(sequence),
         "--repeats", str(repeats)],
        capture_output=True, text=True, check=True,
    )
    return float(completed.stdout.strip().splitlines()[-1])


def time_only(model_name: str, method: str, batch: int, sequence: int, repeats: int) -> float:
    """In this (fresh) process: median milliseconds of ``method`` on the CPU with 2 threads."""
    torch.set_num_threads(2)
    model, data = build(model_name, batch, sequence, torch.device("cpu"))
    with method_case(method, model, data) as run:
        return time_ms(run, torch.device("cpu"), warmup=1, repeats=repeats)


def head_to_head(python: Path, model_name: str, methods: Sequence[str], args: argparse.Namespace, batch: int) -> dict:
    """``{(implementation, method): ms}`` for ours and LXT, alternating fresh processes of LXT's virtualenv
    (the plain gradient once per round: it is the same code for both)."""
    runs: dict = {}
    for _ in range(args.lxt_rounds):
        for method in methods:
            implementations = [("ours", run_ours_in)] + ([] if method == "gradient" else [("lxt", run_lxt)])
            for implementation, run in implementations:
                runs.setdefault((implementation, method), []).append(
                    run(python, model_name, method, batch, args.sequence, args.repeats)
                )
    return {key: statistics.median(values) for key, values in runs.items()}


def benchmark(model_name: str, args: argparse.Namespace, device: torch.device) -> str:
    batch = args.batch if args.batch is not None else (8 if model_name == "vit_b_16" else 1)
    model, data = build(model_name, batch, args.sequence, device)
    cases = {method: (lambda method=method: method_case(method, model, data)) for method in METHODS}
    times = time_interleaved_ms(cases, device, warmup=1, repeats=args.repeats, rounds=args.rounds)
    if device.type == "cuda":
        memory = {}
        for method in METHODS:
            with method_case(method, model, data) as run:
                memory[method] = peak_memory_bytes(run, device) / MIB
    elif args.no_memory:
        memory = {}
    else:
        memory = {method: cpu_peak_growth_mib(model_name, method, batch, args.sequence) for method in METHODS}
    rows = []
    for method in METHODS:
        peak = memory.get(method)
        rows.append([
            method, f"{times[method]:.0f}", f"{times[method] / times['gradient']:.2f}",
            "-" if peak is None else f"{peak:.0f}",
            "-" if peak is None or not memory.get("gradient") else f"{peak / memory['gradient']:.2f}",
        ])
    lxt_python = Path(args.lxt_python)
    note = ""
    if device.type == "cpu" and lxt_python.exists():
        lxt_methods = ("gradient", "attn_lrp", "cp_lrp") if model_name == "gpt2" else ("gradient", "cp_lrp")
        lxt = {method: run_lxt(lxt_python, model_name, method, batch, args.sequence, args.repeats) for method in lxt_methods}
        for method in lxt_methods[1:]:
            rows.append([f"lxt_{method}", f"{lxt[method]:.0f}", f"{lxt[method] / lxt['gradient']:.2f}", "-", "-"])
        note = f"\nLXT rows: ratio to LXT's own plain gradient in its process ({lxt['gradient']:.0f} ms)."
        if args.lxt_rounds:
            same = head_to_head(lxt_python, model_name, lxt_methods, args, batch)
            for implementation in ("ours", "lxt"):
                for method in lxt_methods[1:]:
                    ms = same[(implementation, method)]
                    rows.append([f"{implementation}_{method}_same_venv", f"{ms:.0f}",
                                 f"{ms / same[('ours', 'gradient')]:.2f}", "-", "-"])
            note += (f" Same-venv rows: ours and LXT in alternating fresh processes of LXT's virtualenv, ratio to the "
                     f"plain gradient there ({same[('ours', 'gradient')]:.0f} ms).")
    elif device.type == "cpu":
        note = f"\nLXT skipped: no {lxt_python} (create it with `make golden`)."
    headers = ["method", "ms", "x gradient", "peak MiB" + (" (RSS growth)" if device.type == "cpu" else ""), "x gradient"]
    shape = f"batch {batch}, 224x224" if model_name == "vit_b_16" else f"batch {batch}, seq {args.sequence}"
    return f"### {model_name} ({shape})\n\n" + format_table(headers, rows) + note


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transformers", description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--model", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--batch", type=int, help="batch size (default: 8 for vit_b_16, 1 for gpt2)")
    parser.add_argument("--sequence", type=int, default=256, help="tokens per sequence (gpt2)")
    parser.add_argument("--repeats", type=int, default=6, help="timed runs per method (median)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaving rounds")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on the CPU")
    parser.add_argument("--no-memory", action="store_true", help="skip the CPU peak-memory subprocesses")
    parser.add_argument("--lxt-python", default=str(DEFAULT_LXT_PYTHON), help="python of a virtualenv with LXT 2.1")
    parser.add_argument("--lxt-rounds", type=int, default=2,
                        help="alternations of ours and LXT in LXT's virtualenv (0: skip the head-to-head)")
    parser.add_argument("--measure-peak", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--time-only", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.measure_peak or args.time_only:
        model_name, method = args.measure_peak or args.time_only
        batch = args.batch if args.batch is not None else (8 if model_name == "vit_b_16" else 1)
        measure = measure_peak if args.measure_peak else functools.partial(time_only, repeats=args.repeats)
        print(measure(model_name, method, batch, args.sequence))
        return
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    print(machine_description(device))
    for model_name in args.model:
        print()
        print(benchmark(model_name, args, device), flush=True)


if __name__ == "__main__":
    main()
