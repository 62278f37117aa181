"""Token inputs in the callback: finding them in batches, running the model, decoding and showing relevance.

A text batch is a dict with integer ``input_ids`` (N, T), optionally an ``attention_mask`` (N, T;
0 marks padding) and labels. The model is called as ``model(input_ids, attention_mask=mask)``; a
Hugging Face ``ModelOutput`` is read through its ``logits``, per-position logits (N, T, V) at the
last attended token (as the attributors explain them). Relevance per token (N, T) is shown as
an image of the tokens coloured by relevance (:func:`token_heatmap`) and as a Markdown table
(:func:`token_table`); padding is left out of both.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from lrp_lightning.callbacks.tables import Table
from lrp_lightning.image import heatmap
from lrp_lightning.transformer.tokens import class_scores

TOKEN_IDS_KEY = "input_ids"
ATTENTION_MASK_KEY = "attention_mask"
# layout of the token heatmap, in pixels: lines wrapped at about the width of a TensorBoard image
# card (350 px), so that the browser shows the text at its own size
TOKEN_IMAGE_WIDTH = 360
TOKEN_PADDING = 3
TOKEN_GAP = 2
ROW_GAP = 6
FONT_SIZE = 13
# tokens of a sample shown in the Markdown table before it is cut
TABLE_MAX_TOKENS = 64
TOKEN_TABLE_COLUMNS = ("sample", "target", "top token", "tokens (relevance / max abs)")
MARKDOWN_SPECIAL = "\\`*_{}[]<>()#+!|"


def batch_attention_mask(batch: Any) -> Optional[torch.Tensor]:
    """The ``attention_mask`` of a dict batch that holds ``input_ids``, else None.

    Parameters
    ----------
    batch : Any
        A batch as the dataloader yields it.

    Returns
    -------
    torch.Tensor or None
    """
    if isinstance(batch, Mapping) and TOKEN_IDS_KEY in batch:
        return batch.get(ATTENTION_MASK_KEY)
    return None


def run_model(model: nn.Module, inputs: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Class scores (N, K) of ``model`` for ``inputs``, with ``attention_mask=`` when given.

    Parameters
    ----------
    model : torch.nn.Module
        The explained model.
    inputs : torch.Tensor or tuple of torch.Tensor
        Inputs, token ids included; a tuple is passed as several positional inputs,
        ``model(x1, x2, ...)``.
    attention_mask : torch.Tensor or None
        Padding mask of token ids.

    Returns
    -------
    torch.Tensor
        The output, or its ``logits``; for (N, T, V) logits of token ids, those at the last
        attended token.
    """
    if isinstance(inputs, tuple):
        return class_scores(model(*inputs), inputs[0])
    outputs = model(inputs) if attention_mask is None else model(inputs, attention_mask=attention_mask)
    return class_scores(outputs, inputs, attention_mask)


class TokenDecoder:
    """Token ids to the strings shown for them.

    Parameters
    ----------
    tokenizer : object, optional
        Anything with ``convert_ids_to_tokens(list of int) -> list of str`` (preferred) or
        ``decode(list of int) -> str`` (called per token), e.g. a Hugging Face tokenizer.
    decode : callable, optional
        ``token id -> str``; replaces the tokenizer.

    Without either, tokens are shown as their ids.

    Raises
    ------
    ValueError
        If both are given.
    TypeError
        If ``decode`` is not callable or the tokenizer has neither method.
    """

    def __init__(self, tokenizer: Any = None, decode: Optional[Callable[[int], str]] = None) -> None:
        if tokenizer is not None and decode is not None:
            raise ValueError("give either tokenizer= or decode=, not both")
        if decode is not None and not callable(decode):
            raise TypeError(f"decode must be a callable token id -> str, got {type(decode).__name__}")
        if tokenizer is not None and not any(
            callable(getattr(tokenizer, name, None)) for name in ("convert_ids_to_tokens", "decode")
        ):
            raise TypeError(
                f"tokenizer {type(tokenizer).__name__} has neither convert_ids_to_tokens nor decode; "
                "pass decode=<token id -> str> instead"
            )
        self.tokenizer = tokenizer
        self.decode = decode

    @property
    def pad_token_id(self) -> Optional[int]:
        """The tokenizer's ``pad_token_id`` when it has an int one, else None."""
        pad = getattr(self.tokenizer, "pad_token_id", None)
        return pad if isinstance(pad, int) and not isinstance(pad, bool) else None

    def __call__(self, ids: Sequence[int]) -> list[str]:
        """The strings of ``ids``, one per id.

        Parameters
        ----------
        ids : sequence of int
            Token ids of one sample.

        Returns
        -------
        list of str
        """
        ids = [int(token) for token in ids]
        if self.decode is not None:
            return [str(self.decode(token)) for token in ids]
        converter = getattr(self.tokenizer, "convert_ids_to_tokens", None)
        if callable(converter):
            return [str(token) for token in converter(ids)]
        if self.tokenizer is not None:
            return [str(self.tokenizer.decode([token])) for token in ids]
        return [str(token) for token in ids]


def visible_tokens(
    decoder: TokenDecoder, input_ids: torch.Tensor, relevance: torch.Tensor, attention_mask: Optional[torch.Tensor]
) -> list[list[tuple[str, float]]]:
    """Per sample, its non-padding tokens as ``(text, relevance)`` pairs, in order.

    Parameters
    ----------
    decoder : TokenDecoder
        Token id to text.
    input_ids, relevance : torch.Tensor
        Shape (N, T).
    attention_mask : torch.Tensor or None
        (N, T); positions where it is 0 are dropped.

    Returns
    -------
    list of list of (str, float)
    """
    rows = []
    for index in range(input_ids.shape[0]):
        keep = torch.ones_like(input_ids[index], dtype=torch.bool)
        if attention_mask is not None:
            keep = attention_mask[index].bool()
        texts = decoder(input_ids[index][keep].tolist())
        rows.append(list(zip(texts, relevance[index][keep].tolist())))
    return rows


def _cell_colors(relevance: torch.Tensor, attention_mask: Optional[torch.Tensor], cmap: str) -> torch.Tensor:
    """uint8 (N, T, 3) colours, normalised per sample over its non-padding tokens."""
    if attention_mask is not None:
        relevance = relevance * attention_mask.to(relevance.dtype)
    return heatmap(relevance.float()[:, None, None, :], cmap=cmap)[:, :, 0, :].permute(0, 2, 1)


def _text_color(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def _font() -> Any:
    """Pillow's built-in font at ``FONT_SIZE`` (Pillow >= 10.1), else its fixed-size bitmap font."""
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except TypeError:
        return ImageFont.load_default()


def token_heatmap(
    tokens: Sequence[Sequence[tuple[str, float]]],
    colors: Sequence[Sequence[tuple[int, int, int]]],
    captions: Sequence[str],
) -> torch.Tensor:
    """Draw each sample's tokens as boxes coloured by relevance, one block of wrapped lines per sample.

    Parameters
    ----------
    tokens : sequence of sequence of (str, float)
        Per sample, its shown tokens (see :func:`visible_tokens`).
    colors : sequence of sequence of (int, int, int)
        Per sample, the RGB colour of each shown token.
    captions : sequence of str
        Per sample, a caption drawn before its tokens.

    Returns
    -------
    torch.Tensor
        uint8 (3, H, W) with ``W = TOKEN_IMAGE_WIDTH``.
    """
    font = _font()
    ascent, descent = font.getmetrics()
    box_height = ascent + descent + 2 * TOKEN_PADDING
    placed = []  # (x, y, text, fill) boxes, captions with fill None
    y = ROW_GAP
    for caption, sample_tokens, sample_colors in zip(captions, tokens, colors):
        x = ROW_GAP
        placed.append((x, y, caption, None))
        x += int(font.getlength(caption)) + 2 * TOKEN_PADDING + TOKEN_GAP
        for (text, _), fill in zip(sample_tokens, sample_colors):
            width = int(font.getlength(text)) + 2 * TOKEN_PADDING
            if x + width > TOKEN_IMAGE_WIDTH - ROW_GAP and x > ROW_GAP:
                x, y = ROW_GAP, y + box_height + TOKEN_GAP
            placed.append((x, y, text, tuple(fill)))
            x += width + TOKEN_GAP
        y += box_height + ROW_GAP
    canvas = Image.new("RGB", (TOKEN_IMAGE_WIDTH, y), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for x, top, text, fill in placed:
        if fill is None:
            draw.text((x, top + TOKEN_PADDING), text, fill=(60, 60, 60), font=font)
            continue
        width = int(font.getlength(text)) + 2 * TOKEN_PADDING
        draw.rectangle((x, top, x + width - 1, top + box_height - 1), fill=fill)
        draw.text((x + TOKEN_PADDING, top + TOKEN_PADDING), text, fill=_text_color(fill), font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).contiguous()


def _markdown(text: str) -> str:
    escaped = "".join(f"\\{char}" if char in MARKDOWN_SPECIAL else char for char in text)
    return escaped.replace("\n", "\\n") or "␣"


def _token_rows(
    tokens: Sequence[Sequence[tuple[str, float]]], targets: Sequence[int], escape: Callable[[str], str],
    emphasis: Callable[[str], str],
) -> list[tuple[int, int, str, str]]:
    """Per sample: index, target, most relevant token, tokens with relevance / max |R| (cut after
    ``TABLE_MAX_TOKENS``); texts passed through ``escape``, the top token's cell through ``emphasis``."""
    rows = []
    for index, (sample_tokens, target) in enumerate(zip(tokens, targets)):
        if not sample_tokens:
            rows.append((index, target, "", ""))
            continue
        scale = max(abs(value) for _, value in sample_tokens) or 1.0
        top = max(range(len(sample_tokens)), key=lambda position: sample_tokens[position][1])
        cells = []
        for position, (text, value) in enumerate(sample_tokens[:TABLE_MAX_TOKENS]):
            shown = f"{escape(text)} ({value / scale:+.2f})"
            cells.append(emphasis(shown) if position == top else shown)
        if len(sample_tokens) > TABLE_MAX_TOKENS:
            cells.append("…")
        rows.append((index, target, escape(sample_tokens[top][0]), " ".join(cells)))
    return rows


def token_table(tokens: Sequence[Sequence[tuple[str, float]]], targets: Sequence[int]) -> str:
    """A Markdown table: per sample its target, its most relevant token and its tokens with relevance.

    Parameters
    ----------
    tokens : sequence of sequence of (str, float)
        Per sample, its shown tokens (see :func:`visible_tokens`).
    targets : sequence of int
        The explained class of each sample.

    Returns
    -------
    str
        The table; relevance is printed as a share of the sample's largest ``|R|``, the top token
        in bold; samples longer than ``TABLE_MAX_TOKENS`` tokens are cut with an ellipsis.
    """
    lines = ["| sample | target | top token | tokens (relevance / max abs) |", "|---:|---:|---|---|"]
    for index, target, top, cells in _token_rows(tokens, targets, _markdown, lambda shown: f"**{shown}**"):
        lines.append(f"| {index} | {target} | {top} | {cells} |")
    return "\n".join(lines)


def token_pictures(
    decoder: TokenDecoder,
    input_ids: torch.Tensor,
    relevance: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    targets: torch.Tensor,
    cmap: str,
) -> tuple[torch.Tensor, Table]:
    """The token heatmap image and the table of one explainer's relevance.

    Parameters
    ----------
    decoder : TokenDecoder
        Token id to text.
    input_ids, relevance : torch.Tensor
        (N, T).
    attention_mask : torch.Tensor or None
        (N, T); padding is left out.
    targets : torch.Tensor
        (N,) explained classes.
    cmap : str
        Colour map.

    Returns
    -------
    tuple of (torch.Tensor, Table)
        uint8 (3, H, W) image and the table (plain rows, and the Markdown of :func:`token_table`).
    """
    input_ids, relevance, targets = input_ids.cpu(), relevance.detach().cpu(), targets.cpu()
    attention_mask = None if attention_mask is None else attention_mask.cpu()
    tokens = visible_tokens(decoder, input_ids, relevance, attention_mask)
    colors = _cell_colors(relevance, attention_mask, cmap)
    kept_colors = []
    for index in range(input_ids.shape[0]):
        keep = torch.ones(input_ids.shape[1], dtype=torch.bool) if attention_mask is None else attention_mask[index].bool()
        kept_colors.append([tuple(color) for color in colors[index][keep].tolist()])
    captions = [f"#{index} (target {int(target)}):" for index, target in enumerate(targets)]
    target_list = targets.tolist()
    rows = _token_rows(tokens, target_list, str, str)
    return token_heatmap(tokens, kept_colors, captions), Table.of(TOKEN_TABLE_COLUMNS, rows, token_table(tokens, target_list))
