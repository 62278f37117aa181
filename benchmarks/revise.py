"""Cost of a training step with RightReasonsLoss, as a ratio to a plain cross-entropy step.

    python -m benchmarks.revise [--device cpu] [--batch 32] [--repeats 10]

A step is forward, loss, backward and an SGD update on a small CNN (two 3x3 convolutions, 32x32 RGB, 10
classes); the right-reasons steps add the penalty on a random quarter of the input (input gradient, or the
LRP relevance of a composite, both with ``create_graph=True``). Cases are interleaved in rounds.
"""
from __future__ import annotations

import argparse
import contextlib
from typing import Iterator, Optional

import torch
from torch import nn

from benchmarks.common import format_table, machine_description, time_interleaved_ms
from lrp_lightning.revise import RightReasonsLoss


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, 10))


def step_case(device: torch.device, batch: int, penalty: Optional[RightReasonsLoss]):
    """A factory of the timed step (a fresh model per case, the same data)."""

    @contextlib.contextmanager
    def open_case() -> Iterator:
        torch.manual_seed(0)
        model = small_cnn().to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(1)
        inputs = torch.rand(batch, 3, 32, 32, generator=generator).to(device)
        labels = torch.randint(0, 10, (batch,), generator=generator).to(device)
        masks = (torch.rand(batch, 1, 32, 32, generator=generator) < 0.25).expand(-1, 3, -1, -1).to(device)

        def step() -> None:
            loss = nn.functional.cross_entropy(model(inputs), labels)
            if penalty is not None:
                loss = loss + penalty(model, inputs, masks, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        yield step

    return open_case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    arguments = parser.parse_args()
    device = torch.device(arguments.device)
    penalties = {
        "plain step": None,
        "RightReasonsLoss gradient": RightReasonsLoss("gradient"),
        "RightReasonsLoss epsilon_plus_flat": RightReasonsLoss("epsilon_plus_flat", target="label"),
        "RightReasonsLoss epsilon_alpha2_beta1": RightReasonsLoss("epsilon_alpha2_beta1", target="label"),
    }
    cases = {label: step_case(device, arguments.batch, penalty) for label, penalty in penalties.items()}
    times = time_interleaved_ms(cases, device, repeats=arguments.repeats)
    plain = times["plain step"]
    print(machine_description(device))
    print(f"small CNN, batch {arguments.batch}, 3x32x32, median of {arguments.repeats} steps in 5 interleaved rounds")
    print(format_table(["step", "ms", "x plain step"],
                       [[label, f"{value:.1f}", f"{value / plain:.2f}x"] for label, value in times.items()]))


if __name__ == "__main__":
    main()
