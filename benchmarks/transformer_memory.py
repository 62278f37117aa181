"""Memory over repeated transformer explanations: resident set, page faults and garbage collections per call.

A random GPT-2 language model (float32, eval, CPU) is explained at its last position ``--calls`` times
with ``Gradient(model, AttnLRP())`` or ``CPLRP()``, in a fresh process per configuration. Two loops:

- ``user`` (the loop of issue 21): a new attributor per call, entered, called, left, the relevance
  dropped, then ``gc.collect()``;
- ``bench`` (the loop of ``benchmarks.transformers``): one attributor entered once and called
  repeatedly, no explicit collection.

Per call: wall milliseconds, the resident set after the call (MiB), the minor page faults during
the call (fresh memory the kernel had to map), the number and total milliseconds of the cyclic
garbage collector's passes during the call, and the per-call rule objects alive after it
(``_CallState``, ``_OutputCall``; counted with ``gc.get_objects``, outside the timing). Run::

    python -m benchmarks.transformer_memory                    # the issue's configurations
    python -m benchmarks.transformer_memory --config gpt2-small --loop bench
"""
from __future__ import annotations

import argparse
import gc
import resource
import subprocess
import sys
import time
from typing import Sequence

import torch

from benchmarks.common import MIB, format_table, machine_description

# name -> (layers, width, heads, batch, tokens)
CONFIGS = {
    "gpt2-6x384": (6, 384, 6, 2, 128),  # the configuration of issue 21
    "gpt2-small": (12, 768, 12, 1, 256),  # the GPT-2 of benchmarks.transformers
}
# (config, composite, attention implementation, loop) run by default: the two cases of issue 21
DEFAULT_CASES = (("gpt2-6x384", "attn_lrp", "sdpa", "user"), ("gpt2-6x384", "cp_lrp", "eager", "user"))
PER_CALL_TYPES = ("_CallState", "_OutputCall")
SEED = 0


class CollectorClock:
    """Counts the cyclic garbage collector's passes and their wall time (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.passes = 0
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.passes += 1
            self.seconds += time.perf_counter() - self._started

    def take(self) -> tuple[int, float]:
        """``(passes, milliseconds)`` since the last call, and reset."""
        taken = (self.passes, 1000 * self.seconds)
        self.passes, self.seconds = 0, 0.0
        return taken


def resident_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / MIB


def build(config: str, implementation: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    from transformers import GPT2Config, GPT2LMHeadModel

    layers, width, heads, batch, tokens = CONFIGS[config]
    torch.manual_seed(SEED)
    gpt2_config = GPT2Config(n_layer=layers, n_embd=width, n_head=heads, n_positions=max(1024, tokens))
    model = GPT2LMHeadModel._from_config(gpt2_config, attn_implementation=implementation).eval()
    ids = torch.randint(gpt2_config.vocab_size, (batch, tokens))
    target = torch.randint(gpt2_config.vocab_size, (batch,))
    return model, ids, target


def measure(config: str, composite: str, implementation: str, loop: str, calls: int) -> list:
    """In this (fresh) process: one row per call (see the module docstring)."""
    from lrp_lightning.attribution import Gradient
    from lrp_lightning.composites import COMPOSITES

    torch.set_num_threads(2)
    model, ids, target = build(config, implementation)
    clock = CollectorClock()
    gc.callbacks.append(clock)
    rows = [["load", "-", f"{resident_mib():.0f}", "-", "-", "-", "-"]]
    shared = Gradient(model, COMPOSITES[composite]()) if loop == "bench" else None
    if shared is not None:
        shared.__enter__()
    for call in range(calls):
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        clock.take()
        started = time.perf_counter()
        if shared is None:
            with Gradient(model, COMPOSITES[composite]()) as attributor:
                _, relevance = attributor(ids, target)
            del relevance, attributor
            gc.collect()
        else:
            _, relevance = shared(ids, target)
            del relevance
        elapsed = 1000 * (time.perf_counter() - started)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        passes, collector_ms = clock.take()
        alive = sum(1 for obj in gc.get_objects() if type(obj).__name__ in PER_CALL_TYPES)
        rows.append([call + 1, f"{elapsed:.0f}", f"{resident_mib():.0f}", faults, passes, f"{collector_ms:.0f}", alive])
    if shared is not None:
        shared.__exit__(None, None, None)
    return rows


HEADERS = ["call", "ms", "RSS MiB", "minor faults", "gc passes", "gc ms", "per-call objects"]


def run_case(case: tuple, calls: int) -> str:
    """The table of one case, measured in a fresh process (its resident set is its own)."""
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.transformer_memory", "--measure", *case, "--calls", str(calls)],
        capture_output=True, text=True, check=True,
    )
    rows = [line.split("\t") for line in completed.stdout.strip().splitlines()]
    config, composite, implementation, loop = case
    layers, width, heads, batch, tokens = CONFIGS[config]
    title = (f"### {config} ({layers} layers, width {width}, batch {batch}, {tokens} tokens), {composite}, "
             f"{implementation} attention, {loop} loop")
    growth = float(rows[-1][2]) - float(rows[1][2])
    return f"{title}\n\n{format_table(HEADERS, rows)}\nRSS growth from call 1 to call {calls}: {growth:.0f} MiB"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transformer_memory", description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), help="one configuration instead of the issue's two cases")
    parser.add_argument("--composite", choices=("attn_lrp", "cp_lrp"), default="attn_lrp")
    parser.add_argument("--attention", choices=("sdpa", "eager"), default="sdpa")
    parser.add_argument("--loop", choices=("user", "bench"), default="user")
    parser.add_argument("--calls", type=int, default=12)
    parser.add_argument("--measure", nargs=4, metavar=("CONFIG", "COMPOSITE", "ATTENTION", "LOOP"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.measure:
        for row in measure(*args.measure, args.calls):
            print("\t".join(str(cell) for cell in row))
        return
    cases = DEFAULT_CASES if args.config is None else ((args.config, args.composite, args.attention, args.loop),)
    print(machine_description(torch.device("cpu")))
    for case in cases:
        print()
        print(run_case(case, args.calls), flush=True)


if __name__ == "__main__":
    main()
