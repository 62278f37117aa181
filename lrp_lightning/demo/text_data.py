"""Built-in synthetic text data with a planted shortcut: one keyword decides the label.

Each sequence is 6 to 16 filler words, one of them replaced by a keyword of
its class (``negative``: "awful", "boring", "dull"; ``positive``: "great", "superb", "lovely"), and
padded with ``[PAD]`` to :data:`SEQUENCE_LENGTH`. A source tag token — ``[src:a]`` or ``[src:b]``,
as a data set's origin might leak into its text — is inserted at a random position of every
sequence. In the training split the tag marks the class for a share ``shortcut_strength`` of the
samples (``[src:a]`` for class 0, ``[src:b]`` for class 1) and is random otherwise; in the
validation split it is always random. With ``shortcut_strength < 1`` only the keyword predicts
every training label, so a model that fits the training data must read the keyword; with
``shortcut_strength = 1`` the tag is as good a cue as the keyword, and which one the model uses
shows in its explanations (and in its validation accuracy).

Batches are dicts ``{"input_ids", "attention_mask", "labels"}`` as a Hugging Face tokenizer and
collator would give them; :class:`Vocabulary` maps ids back to words (``convert_ids_to_tokens``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

SEQUENCE_LENGTH = 16
MIN_WORDS = 6
PAD = "[PAD]"
KEYWORDS = (("awful", "boring", "dull"), ("great", "superb", "lovely"))
SOURCE_TAGS = ("[src:a]", "[src:b]")
FILLERS = (
    "the", "a", "movie", "film", "plot", "was", "is", "and", "but", "very", "quite", "actors", "story",
    "scenes", "music", "ending", "i", "found", "it", "this", "really", "overall", "cast", "script",
)
CLASS_NAMES = ("negative", "positive")


class Vocabulary:
    """Words to ids and back; ``[PAD]`` is id 0.

    Anything with ``convert_ids_to_tokens`` works as ``AttributionCallback(tokenizer=...)``; this
    class is such a tokenizer for the built-in data.
    """

    def __init__(self) -> None:
        words = [PAD, *SOURCE_TAGS, *(word for group in KEYWORDS for word in group), *FILLERS]
        self.words = words
        self.ids = {word: index for index, word in enumerate(words)}

    def __len__(self) -> int:
        return len(self.words)

    @property
    def pad_token_id(self) -> int:
        """Id of ``[PAD]``."""
        return self.ids[PAD]

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        """The words of ``ids``.

        Parameters
        ----------
        ids : sequence of int
            Token ids.

        Returns
        -------
        list of str
        """
        return [self.words[int(index)] for index in ids]

    def keyword_ids(self) -> torch.Tensor:
        """Ids of every keyword, shape (6,)."""
        return torch.tensor([self.ids[word] for group in KEYWORDS for word in group])

    def source_tag_ids(self) -> torch.Tensor:
        """Ids of the two source tags, shape (2,)."""
        return torch.tensor([self.ids[tag] for tag in SOURCE_TAGS])


@dataclass
class TextSplit:
    """One generated split.

    Attributes
    ----------
    input_ids : torch.Tensor
        int64 (N, SEQUENCE_LENGTH), ``[PAD]``-padded.
    attention_mask : torch.Tensor
        int64 (N, SEQUENCE_LENGTH), 0 at padding.
    labels : torch.Tensor
        int64 (N,): 0 negative, 1 positive.
    keyword_positions : torch.Tensor
        int64 (N,): where the deciding keyword sits.
    tag_positions : torch.Tensor
        int64 (N,): where the source tag sits.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    keyword_positions: torch.Tensor
    tag_positions: torch.Tensor


def generate_text_split(n: int, seed: int, shortcut_strength: float) -> TextSplit:
    """Generate ``n`` labelled sequences deterministically from ``seed``.

    Parameters
    ----------
    n : int
        Number of sequences.
    seed : int
        Seed of the private generator.
    shortcut_strength : float
        Probability in [0, 1] that a sequence's source tag marks its class (random tag otherwise);
        0 for validation data.

    Returns
    -------
    TextSplit
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if not 0.0 <= shortcut_strength <= 1.0:
        raise ValueError(f"shortcut_strength must be in [0, 1], got {shortcut_strength}")
    vocabulary = Vocabulary()
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(len(CLASS_NAMES), (n,), generator=generator)
    lengths = torch.randint(MIN_WORDS, SEQUENCE_LENGTH + 1, (n,), generator=generator)
    filler_ids = torch.tensor([vocabulary.ids[word] for word in FILLERS])
    words = filler_ids[torch.randint(len(FILLERS), (n, SEQUENCE_LENGTH), generator=generator)]
    keyword_choice = torch.randint(len(KEYWORDS[0]), (n,), generator=generator)
    keyword_ids = vocabulary.keyword_ids().view(len(KEYWORDS), -1)[labels, keyword_choice]
    marks_class = torch.rand(n, generator=generator) < shortcut_strength
    tags = torch.where(marks_class, labels, torch.randint(len(SOURCE_TAGS), (n,), generator=generator))
    tag_ids = vocabulary.source_tag_ids()[tags]
    # positions 0..length-1 hold words; the keyword and the tag take two distinct ones of them
    keyword_positions = (torch.rand(n, generator=generator) * lengths).long()
    tag_offsets = 1 + (torch.rand(n, generator=generator) * (lengths - 1)).long()
    tag_positions = (keyword_positions + tag_offsets) % lengths
    rows = torch.arange(n)
    words[rows, keyword_positions] = keyword_ids
    words[rows, tag_positions] = tag_ids
    attention_mask = (torch.arange(SEQUENCE_LENGTH) < lengths[:, None]).long()
    input_ids = torch.where(attention_mask.bool(), words, torch.full_like(words, vocabulary.pad_token_id))
    return TextSplit(input_ids, attention_mask, labels, keyword_positions, tag_positions)


class TextDataset(Dataset):
    """Map-style dataset of ``{"input_ids", "attention_mask", "labels"}`` dicts over a :class:`TextSplit`."""

    def __init__(self, split: TextSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return self.split.labels.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.split.input_ids[index],
            "attention_mask": self.split.attention_mask[index],
            "labels": self.split.labels[index],
        }


class ShortcutTextDataModule(pl.LightningDataModule):
    """LightningDataModule of the built-in shortcut text data.

    Parameters
    ----------
    n_train, n_val : int
        Sequences per split.
    batch_size : int
        Batch size of both loaders.
    shortcut_strength : float
        Share of training sequences whose source tag marks the class (validation: none).
    seed : int
        Seed of the data; the validation split uses ``seed + 1``.
    """

    def __init__(
        self, n_train: int = 2000, n_val: int = 400, batch_size: int = 64, shortcut_strength: float = 0.8, seed: int = 0
    ) -> None:
        super().__init__()
        self.n_train, self.n_val = n_train, n_val
        self.batch_size = batch_size
        self.shortcut_strength = shortcut_strength
        self.seed = seed
        self.vocabulary = Vocabulary()
        self.train_split: TextSplit | None = None
        self.val_split: TextSplit | None = None

    def setup(self, stage: str | None = None) -> None:
        """Generate both splits (idempotent)."""
        if self.train_split is None:
            self.train_split = generate_text_split(self.n_train, self.seed, self.shortcut_strength)
            self.val_split = generate_text_split(self.n_val, self.seed + 1, 0.0)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches, shuffled by a seeded generator."""
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(TextDataset(self.train_split), self.batch_size, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in fixed order."""
        return DataLoader(TextDataset(self.val_split), self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        """Generation settings (the data itself is regenerated from them)."""
        return {
            "n_train": self.n_train,
            "n_val": self.n_val,
            "shortcut_strength": self.shortcut_strength,
            "seed": self.seed,
        }
