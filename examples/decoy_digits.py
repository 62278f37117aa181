"""Decoy digits: a model right for the wrong reasons, corrected by RightReasonsLoss (Ross et al., IJCAI 2017).

scikit-learn's bundled 8x8 digits, framed by a blank 2-pixel border (as MNIST's digits sit in a blank frame),
get a 2x2 swatch in a random corner of the 12x12 image. In the training set its shade encodes the class (a
perfect shortcut); in the test set the shade is random (Ross et al.'s Decoy MNIST protocol). A plain MLP learns
the shortcut and falls on the test set; a reference MLP trained on the same images with random (uninformative)
shades shows what is reachable; Ross et al.'s input-gradient penalty on the swatch, or an LRP relevance penalty,
recovers it.

    python examples/decoy_digits.py [--seed 0] [--epochs 40] [--train-size 1000]
"""
from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn

from lrp_lightning.revise import RightReasonsLoss

SWATCH = 2
BORDER = 2
CLASSES = 10
HIDDEN = (100, 100)


def decoy_digits(generator: torch.Generator, informative: bool, images: torch.Tensor, labels: torch.Tensor):
    """Return ``(images with a swatch, swatch masks)``, flattened: the ``(N, 8, 8)`` images in a blank border of
    ``BORDER`` pixels, a 2x2 patch in a random corner, of shade ``1 - 0.1 y`` for the label ``y``
    (``informative``) or for a random class."""
    framed = nn.functional.pad(images, (BORDER,) * 4)
    count, side = framed.shape[0], framed.shape[-1]
    masks = torch.zeros_like(framed, dtype=torch.bool)
    corners = torch.randint(0, 4, (count,), generator=generator)
    shades_of = labels if informative else torch.randint(0, CLASSES, (count,), generator=generator)
    for index in range(count):
        row = 0 if corners[index] < 2 else side - SWATCH
        column = 0 if corners[index] % 2 == 0 else side - SWATCH
        framed[index, row:row + SWATCH, column:column + SWATCH] = 1.0 - 0.1 * float(shades_of[index])
        masks[index, row:row + SWATCH, column:column + SWATCH] = True
    return framed.flatten(1), masks.flatten(1)


def mlp(inputs: int) -> nn.Module:
    """A ReLU MLP with two hidden layers (as Ross et al.'s)."""
    layers, width = [], inputs
    for hidden in HIDDEN:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, CLASSES))


def train(inputs: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor, seed: int, epochs: int,
          penalty: RightReasonsLoss | None = None) -> nn.Module:
    """An MLP trained with Adam on mini-batches of 64 (cross-entropy, plus ``penalty`` on the swatch masks)."""
    torch.manual_seed(seed)
    model = mlp(inputs.shape[1])
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
    """The share of ``inputs`` that ``model`` classifies as ``labels``."""
    with torch.no_grad():
        return float((model(inputs).argmax(1) == labels).float().mean())


# epsilon_plus (Epsilon at every Linear) and not epsilon_plus_flat: Flat at the first layer spreads a hidden
# unit's relevance evenly over all 144 inputs whatever their values, so it cannot single out the swatch
PENALTIES = {
    "RightReasonsLoss gradient": lambda: RightReasonsLoss("gradient", weight=10.0, reduction="mean"),
    "RightReasonsLoss epsilon_plus": lambda: RightReasonsLoss("epsilon_plus", weight=10.0, reduction="mean"),
}


def run(seed: int = 0, epochs: int = 40, train_size: int = 1000, corrections: tuple = tuple(PENALTIES)) -> dict:
    """Train the reference, plain and corrected models (``corrections``: keys of ``PENALTIES``); return their
    test accuracies (the test set: the digits from index 1200 of a seeded permutation, random shades)."""
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    labels = torch.tensor(digits.target)
    split = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(seed))
    train_rows, test_rows = split[:min(train_size, 1200)], split[1200:]
    generator = torch.Generator().manual_seed(seed + 1)
    decoyed, masks = decoy_digits(generator, True, images[train_rows], labels[train_rows])
    uninformative, uninformative_masks = decoy_digits(generator, False, images[train_rows], labels[train_rows])
    test_inputs, _ = decoy_digits(generator, False, images[test_rows], labels[test_rows])
    train_labels, test_labels = labels[train_rows], labels[test_rows]
    models = {
        "reference (random swatch shades)": train(uninformative, train_labels, uninformative_masks, seed, epochs),
        "plain (decoy shades)": train(decoyed, train_labels, masks, seed, epochs),
    }
    for name in corrections:
        models[name] = train(decoyed, train_labels, masks, seed, epochs, PENALTIES[name]())
    return {name: accuracy(model, test_inputs, test_labels) for name, model in models.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--train-size", type=int, default=1000)
    arguments = parser.parse_args()
    results = run(arguments.seed, arguments.epochs, arguments.train_size)
    print("| model | test accuracy (random swatch shades) |")
    print("|---|---|")
    for name, value in results.items():
        print(f"| {name} | {value:.3f} |")


if __name__ == "__main__":
    main()
