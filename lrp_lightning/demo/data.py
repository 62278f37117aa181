"""Built-in synthetic data for the demo: coloured shapes on textured backgrounds.

Every image is generated from a seed with a private :class:`torch.Generator` (the global RNG is
never touched), so no download is needed and two runs see the same pixels. Each sample carries a
mask of the object and a mask of a small "watermark": a black/white checkerboard blended into one
of the four corners at :data:`WATERMARK_OPACITY` (or a chosen opacity). With the confounder on, the watermark's corner
encodes the class in the training split (a "Clever Hans" shortcut); in the validation split, and
with the confounder off, the corner is drawn independently of the class. A "mixed" validation split
(``val_watermark="mixed"``) instead gives half of the images the watermark in the corner that marks
their class in training and the other half none, so that a model with the shortcut applies two
strategies within each class — what :class:`~lrp_lightning.callbacks.RelevanceClusterCallback`
should find.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

import lightning.pytorch as pl

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle")
IMAGE_SIZE = 64
WATERMARK_SIZE = 6
WATERMARK_MARGIN = 2
# faint enough that a model which ignores the watermark gives it no more relevance than its area
# share, yet an easy shortcut when its corner encodes the class
WATERMARK_OPACITY = 0.2
# centre band and radii keep every object clear of the watermark corners
CENTER_RANGE = (23.0, 41.0)
RADIUS_RANGE = (10.0, 14.0)
# validation watermark layouts, and the share of watermarked images in a "mixed" split
VAL_WATERMARKS = ("random", "mixed")
MIXED_SHARE = 0.5
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


@dataclass(frozen=True)
class ShapesSplit:
    """One generated split.

    Attributes
    ----------
    images : torch.Tensor
        Float images in [0, 1], shape (N, 3, 64, 64).
    labels : torch.Tensor
        Class indices, shape (N,), into :data:`CLASS_NAMES`.
    object_masks : torch.Tensor
        Bool masks of the shape, shape (N, 64, 64).
    watermark_masks : torch.Tensor
        Bool masks of the watermark patch, shape (N, 64, 64).
    watermark_corners : torch.Tensor
        Corner index of the watermark, shape (N,): 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right,
        -1 for an image without watermark.
    """

    images: torch.Tensor
    labels: torch.Tensor
    object_masks: torch.Tensor
    watermark_masks: torch.Tensor
    watermark_corners: torch.Tensor


def _uniform(generator: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _shape_masks(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rasterize one circle, square or triangle per label, with random centre, size and rotation."""
    n = labels.shape[0]
    cy = _uniform(generator, n, *CENTER_RANGE).view(n, 1, 1)
    cx = _uniform(generator, n, *CENTER_RANGE).view(n, 1, 1)
    radius = _uniform(generator, n, *RADIUS_RANGE).view(n, 1, 1)
    angle = _uniform(generator, n, 0.0, 2 * math.pi).view(n, 1, 1)
    coords = torch.arange(IMAGE_SIZE, dtype=torch.float32) + 0.5
    dy = coords.view(1, -1, 1) - cy
    dx = coords.view(1, 1, -1) - cx
    # rotate the pixel grid into the shape's frame
    u = dx * torch.cos(angle) + dy * torch.sin(angle)
    v = -dx * torch.sin(angle) + dy * torch.cos(angle)
    circle = u**2 + v**2 <= radius**2
    half_side = radius / math.sqrt(2.0)
    square = (u.abs() <= half_side) & (v.abs() <= half_side)
    # equilateral triangle inscribed in the circle: inside all three edge half-planes
    triangle = torch.ones_like(circle)
    for k in range(3):
        theta = 2 * math.pi * k / 3
        triangle &= u * math.cos(theta) + v * math.sin(theta) <= radius / 2
    shapes = torch.stack([circle, square, triangle], dim=1)
    return shapes[torch.arange(n), labels]


def _textured_background(
    color_a: torch.Tensor, color_b: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Two colours, shape (N, 3, 1, 1), mixed by a sum of random sinusoidal gratings, plus pixel noise."""
    n = color_a.shape[0]
    coords = torch.arange(IMAGE_SIZE, dtype=torch.float32) / IMAGE_SIZE
    yy = coords.view(1, -1, 1)
    xx = coords.view(1, 1, -1)
    pattern = torch.zeros(n, IMAGE_SIZE, IMAGE_SIZE)
    for _ in range(3):
        freq = _uniform(generator, n, 2.0, 8.0).view(n, 1, 1)
        direction = _uniform(generator, n, 0.0, math.pi).view(n, 1, 1)
        phase = _uniform(generator, n, 0.0, 2 * math.pi).view(n, 1, 1)
        wave = xx * torch.cos(direction) + yy * torch.sin(direction)
        pattern += torch.sin(2 * math.pi * freq * wave + phase)
    mix = (pattern / 6.0 + 0.5).unsqueeze(1)
    noise = 0.05 * torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    return color_a * mix + color_b * (1 - mix) + noise


def _watermark_pattern() -> torch.Tensor:
    """A black/white checkerboard patch of 2x2 cells, shape (3, size, size)."""
    index = torch.arange(WATERMARK_SIZE)
    checker = ((index.view(-1, 1) // 2 + index.view(1, -1) // 2) % 2).float()
    return checker.expand(3, -1, -1)


def _corner_patch(corner: int) -> tuple[slice, slice]:
    """Rows and columns of the watermark patch in ``corner`` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)."""
    far = IMAGE_SIZE - WATERMARK_MARGIN - WATERMARK_SIZE
    top = WATERMARK_MARGIN if corner < 2 else far
    left = WATERMARK_MARGIN if corner % 2 == 0 else far
    return slice(top, top + WATERMARK_SIZE), slice(left, left + WATERMARK_SIZE)


def watermark_regions() -> torch.Tensor:
    """Bool mask of the four corner patches where a watermark can sit, shape (64, 64).

    A model can read the class from the watermark's corner and equally from the other corners being empty, so a
    penalty that must remove the shortcut covers all four regions (what ``--revise rrr`` penalises).
    """
    regions = torch.zeros(IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bool)
    for corner in range(4):
        regions[_corner_patch(corner)] = True
    return regions


def generate_split(
    n: int,
    seed: int,
    confounded: bool,
    confounder_strength: float = 1.0,
    watermarked: float = 1.0,
    watermark_opacity: float = WATERMARK_OPACITY,
) -> ShapesSplit:
    """Generate ``n`` labelled images deterministically from ``seed``.

    Parameters
    ----------
    n : int
        Number of samples.
    seed : int
        Seed of the private generator; equal seeds give identical splits.
    confounded : bool
        If True, the watermark sits in corner ``label`` with probability ``confounder_strength``
        (otherwise in a uniformly random corner). If False, the corner is always uniform.
    confounder_strength : float
        Probability in [0, 1] that a confounded sample's watermark marks its class.
    watermarked : float
        Probability in [0, 1] that a sample carries a watermark at all (corner -1: none). At 1.0
        no extra random number is drawn, so the split equals the one of earlier versions.
    watermark_opacity : float
        Opacity of the watermark in [0, 1].

    Returns
    -------
    ShapesSplit
        Images, labels and masks.
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if not 0.0 <= confounder_strength <= 1.0:
        raise ValueError(f"confounder_strength must be in [0, 1], got {confounder_strength}")
    if not 0.0 <= watermarked <= 1.0:
        raise ValueError(f"watermarked must be in [0, 1], got {watermarked}")
    if not 0.0 <= watermark_opacity <= 1.0:
        raise ValueError(f"watermark_opacity must be in [0, 1], got {watermark_opacity}")
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(len(CLASS_NAMES), (n,), generator=generator)
    object_masks = _shape_masks(labels, generator)
    color_a = torch.rand(n, 3, 1, 1, generator=generator)
    color_b = (color_a + _uniform(generator, n, -0.25, 0.25).view(n, 1, 1, 1)).clamp(0.0, 1.0)
    images = _textured_background(color_a, color_b, generator)
    # the complementary colour keeps the object visible on any background
    object_color = (color_a + 0.5) % 1.0
    shade = 0.05 * torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    images = torch.where(object_masks.unsqueeze(1), object_color + shade, images)

    corners = torch.randint(4, (n,), generator=generator)
    if confounded:
        marks_class = torch.rand(n, generator=generator) < confounder_strength
        corners = torch.where(marks_class, labels, corners)
    if watermarked < 1.0:
        corners = torch.where(torch.rand(n, generator=generator) < watermarked, corners, torch.full_like(corners, -1))
    watermark_masks = stamp_watermarks(images, corners, watermark_opacity)
    return ShapesSplit(
        images=images.clamp(0.0, 1.0),
        labels=labels,
        object_masks=object_masks,
        watermark_masks=watermark_masks,
        watermark_corners=corners,
    )


def stamp_watermarks(
    images: torch.Tensor, corners: torch.Tensor, opacity: float = WATERMARK_OPACITY
) -> torch.Tensor:
    """Blend the watermark into each image's corner, in place, and return the watermark masks.

    Inside the patch, ``image = opacity * checkerboard + (1 - opacity) * image``.

    Parameters
    ----------
    images : torch.Tensor
        Float images, shape (N, 3, 64, 64); modified in place.
    corners : torch.Tensor
        Corner index per image, shape (N,): 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right;
        any other value (e.g. -1) leaves the image without watermark.
    opacity : float
        Weight of the checkerboard in [0, 1].

    Returns
    -------
    torch.Tensor
        Bool watermark masks, shape (N, 64, 64).
    """
    masks = torch.zeros(images.shape[0], IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bool)
    pattern = _watermark_pattern()
    for corner in range(4):
        selected = corners == corner
        rows, cols = _corner_patch(corner)
        background = images[selected, :, rows, cols]
        images[selected, :, rows, cols] = torch.lerp(background, pattern, opacity)
        masks[selected, rows, cols] = True
    return masks


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Map [0, 1] images to the model's input scale ``(x - MEAN) / STD``."""
    mean = torch.tensor(MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def input_bounds() -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel lowest and highest normalized input value, shape (1, 3, 1, 1) each."""
    return normalize(torch.zeros(1, 3, 1, 1)), normalize(torch.ones(1, 3, 1, 1))


class ShapesDataset(Dataset):
    """Map-style dataset of ``(image, label)`` pairs over a :class:`ShapesSplit`, images normalized.

    Parameters
    ----------
    split : ShapesSplit
        The generated data (its masks stay on ``split``).
    """

    def __init__(self, split: ShapesSplit) -> None:
        self.split = split
        self.inputs = normalize(split.images)

    def __len__(self) -> int:
        return self.split.labels.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[index], self.split.labels[index]


class ShapesDataModule(pl.LightningDataModule):
    """LightningDataModule of the built-in shapes data (train and validation splits).

    Parameters
    ----------
    n_train : int
        Training samples.
    n_val : int
        Validation samples.
    batch_size : int
        Batch size of both loaders.
    confounder : bool
        If True, the watermark corner encodes the class in the training split (never in validation).
    confounder_strength : float
        Fraction of training samples whose watermark marks their class when ``confounder`` is on.
    seed : int
        Seed of the data; the validation split uses ``seed + 1``.
    val_watermark : {"random", "mixed"}
        ``"random"``: every validation image carries the watermark in a random corner. ``"mixed"``:
        half carry it in the corner that marks their class in training, half carry none.
    watermark_opacity : float
        Opacity of the watermark in both splits.
    train_watermarked : float
        Fraction of training samples that carry a watermark at all (the rest carry none): below 1 the shortcut
        covers part of the data and the shapes must be learned for the rest, the setting of the ClArC papers.
    """

    def __init__(
        self,
        n_train: int = 2000,
        n_val: int = 400,
        batch_size: int = 64,
        confounder: bool = True,
        confounder_strength: float = 1.0,
        seed: int = 0,
        val_watermark: str = "random",
        watermark_opacity: float = WATERMARK_OPACITY,
        train_watermarked: float = 1.0,
    ) -> None:
        super().__init__()
        if val_watermark not in VAL_WATERMARKS:
            raise ValueError(f"val_watermark must be one of {VAL_WATERMARKS}, got {val_watermark!r}")
        self.val_watermark = val_watermark
        self.n_train = n_train
        self.n_val = n_val
        self.batch_size = batch_size
        self.confounder = confounder
        self.confounder_strength = confounder_strength
        self.train_watermarked = train_watermarked
        self.seed = seed
        self.watermark_opacity = watermark_opacity
        self.train_split: ShapesSplit | None = None
        self.val_split: ShapesSplit | None = None

    def setup(self, stage: str | None = None) -> None:
        """Generate both splits (idempotent)."""
        if self.train_split is None:
            self.train_split = generate_split(
                self.n_train, self.seed, self.confounder, self.confounder_strength, self.train_watermarked,
                watermark_opacity=self.watermark_opacity,
            )
            if self.val_watermark == "mixed":
                self.val_split = generate_split(
                    self.n_val, self.seed + 1, confounded=True, watermarked=MIXED_SHARE,
                    watermark_opacity=self.watermark_opacity,
                )
            else:
                self.val_split = generate_split(
                    self.n_val, self.seed + 1, confounded=False, watermark_opacity=self.watermark_opacity
                )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches ``(image, label)``, shuffled by a seeded generator."""
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            ShapesDataset(self.train_split), self.batch_size, shuffle=True, generator=generator
        )

    def val_dataloader(self) -> DataLoader:
        """Validation batches ``(image, label)`` in fixed order."""
        return DataLoader(ShapesDataset(self.val_split), self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        """Generation settings (the data itself is regenerated from them)."""
        return {
            "n_train": self.n_train,
            "n_val": self.n_val,
            "confounder": self.confounder,
            "confounder_strength": self.confounder_strength,
            "train_watermarked": self.train_watermarked,
            "seed": self.seed,
            "val_watermark": self.val_watermark,
            "watermark_opacity": self.watermark_opacity,
        }
