"""The metrics on their own: score attributions of any model with torchmetrics metrics.

No callback, no Lightning Trainer: compute attributions (here LRP and the plain gradient) for a
small CNN on the built-in shapes data, then evaluate faithfulness, localisation and complexity
metrics on them. Every metric is a ``torchmetrics.Metric`` (update/compute/reset), computes on the
inputs' device and draws randomness only from its own seeded generator. Run::

    python examples/metrics_standalone.py
"""
import argparse

import torch
import torch.nn.functional as F

from lrp_lightning.attribution import Gradient
from lrp_lightning.canonizers import SequentialMergeBatchNorm
from lrp_lightning.composites import EpsilonPlusFlat
from lrp_lightning.demo.data import generate_split, normalize
from lrp_lightning.demo.model import ShapesCNN
from lrp_lightning.metrics import (
    Complexity,
    Deletion,
    FaithfulnessCorrelation,
    Insertion,
    RegionPerturbation,
    RelevanceMassAccuracy,
    Sparseness,
)


def train(model: ShapesCNN, steps: int) -> None:
    """A few plain-PyTorch optimisation steps on confounder-free shapes data."""
    data = generate_split(32 * max(steps, 1), seed=0, confounded=False)
    inputs, labels = normalize(data.images), data.labels
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        batch = slice(32 * step, 32 * (step + 1))
        loss = F.cross_entropy(model(inputs[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=100, help="plain training steps before explaining")
    parser.add_argument("--samples", type=int, default=32, help="images to explain and score")
    parser.add_argument("--steps", type=int, default=32, help="perturbation steps of the curve metrics")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = ShapesCNN()
    train(model, args.train_steps)
    data = generate_split(args.samples, seed=1, confounded=False)
    x, target = normalize(data.images), data.labels

    explainers = {
        "epsilon_plus_flat": EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()]),
        "gradient": None,  # Gradient without a composite is the plain input gradient
    }
    for name, composite in explainers.items():
        with Gradient(model, composite) as attributor:
            _, relevance = attributor(x, target)
        # each metric: update(...) with a batch, compute() for the mean over all samples seen
        # curve metrics return a dict (the scalar under "aopc"/"auc", plus the mean "curve")
        faithfulness = {
            "aopc (MoRF)": (RegionPerturbation(patch_size=8, steps=args.steps, order="morf"), "aopc"),
            "deletion auc": (Deletion(steps=args.steps), "auc"),
            "insertion auc": (Insertion(steps=args.steps), "auc"),
            "faithfulness corr": (FaithfulnessCorrelation(nr_runs=20, subset_size=64), None),
        }
        results = {}
        for metric_name, (metric, key) in faithfulness.items():
            metric.update(model, x, relevance, target)
            value = metric.compute()
            results[metric_name] = value if key is None else value[key]
        mass = RelevanceMassAccuracy()
        mass.update(relevance.sum(dim=1).clamp(min=0), data.object_masks)  # positive relevance on the shape
        results["relevance mass on object"] = mass.compute()
        for metric_name, metric in {"sparseness": Sparseness(), "complexity": Complexity()}.items():
            metric.update(relevance)
            results[metric_name] = metric.compute()
        print(name)
        for metric_name, value in results.items():
            print(f"  {metric_name:26s} {float(value):8.4f}")


if __name__ == "__main__":
    main()
