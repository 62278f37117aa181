"""Decoy digits: a model right for the wrong reasons, corrected by RightReasonsLoss (Ross et al., IJCAI 2017).

scikit-learn's bundled 8x8 digits get a 2x2 swatch in a random corner. In the training set its shade encodes the
class (a perfect shortcut); in the test set the shade is random. A plain MLP learns the shortcut and falls on the
test set; a reference MLP trained on the same images with random (uninformative) shades shows what is reachable;
Ross et al.'s input-gradient penalty on the swatch recovers it.

    python examples/decoy_digits.py [--seed 0] [--epochs 40] [--train-size 400]
"""
from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn

from lrp_lightning.revise import RightReasonsLoss

SWATCH = 2
CLASSES = 10


def decoy_digits(generator: torch.Generator, informative: bool, images: torch.Tensor, labels: torch.Tensor):
    """Return ``(images with a swatch, swatch masks)``: a 2x2 patch in a random corner, of shade ``1 - 0.1 y``
    (``informative``) or of a random class's shade."""
    count = images.shape[0]
    decoyed, masks = images.clone(), torch.zeros_like(images, dtype=torch.bool)
    corners = torch.randint(0, 4, (count,), generator=generator)
    shades_of = labels if informative else torch.randint(0, CLASSES, (count,), generator=generator)
    for index in range(count):
        row = 0 if corners[index] < 2 else 8 - SWATCH
        column = 0 if corners[index] % 2 == 0 else 8 - SWATCH
        decoyed[index, row:row + SWATCH, column:column + SWATCH] = 1.0 - 0.1 * float(shades_of[index])
        masks[index, row:row + SWATCH, column:column + SWATCH] = True
    return decoyed.flatten(1), masks.flatten(1)


def train(inputs: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor, seed: int, epochs: int,
          penalty: RightReasonsLoss | None = None) -> nn.Module:
    """An MLP trained with Adam on mini-batches of 64 (cross-entropy, plus ``penalty`` on the swatch masks)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, CLASSES))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    order_generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(inputs.shape[0], generator=order_generator).split(64):
            loss = nn.functional.cross_entropy(model(inputs[batch]), labels[batch])
            if penalty is not None:
                loss = loss + penalty(model, inputs[batch], masks[batch], labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(inputs).argmax(1) == labels).float().mean())


def run(seed: int = 0, epochs: int = 40, train_size: int = 400) -> dict:
    """Train the reference, plain and corrected models; return their test accuracies."""
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    labels = torch.tensor(digits.target)
    split = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(seed))
    train_rows, test_rows = split[:train_size], split[1200:]
    generator = torch.Generator().manual_seed(seed + 1)
    decoyed, masks = decoy_digits(generator, True, images[train_rows], labels[train_rows])
    uninformative, uninformative_masks = decoy_digits(generator, False, images[train_rows], labels[train_rows])
    test_inputs, _ = decoy_digits(generator, False, images[test_rows], labels[test_rows])
    train_labels, test_labels = labels[train_rows], labels[test_rows]
    models = {
        "reference (random swatch shades)": train(uninformative, train_labels, uninformative_masks, seed, epochs),
        "plain (decoy shades)": train(decoyed, train_labels, masks, seed, epochs),
        "RightReasonsLoss gradient": train(decoyed, train_labels, masks, seed, epochs,
                                           RightReasonsLoss("gradient", weight=10.0, reduction="mean")),
    }
    return {name: accuracy(model, test_inputs, test_labels) for name, model in models.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--train-size", type=int, default=400)
    arguments = parser.parse_args()
    results = run(arguments.seed, arguments.epochs, arguments.train_size)
    print("| model | test accuracy (random swatch shades) |")
    print("|---|---|")
    for name, value in results.items():
        print(f"| {name} | {value:.3f} |")


if __name__ == "__main__":
    main()
