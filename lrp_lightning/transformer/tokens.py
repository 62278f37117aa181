"""Helpers for explaining models on token inputs: the input embedding, the explained logits, and
capturing the embedding output whose relevance is read.

A language or text-classification model receives integer token ids ``(N, T)``. Its input embedding
maps them to vectors ``e`` ``(N, T, H)``; the relevance of token ``t`` is
``sum_h e[t, h] * g[t, h]`` for the (modified) gradient ``g`` arriving at ``e``. Hugging Face models
return a ``ModelOutput``; it is explained through its ``logits``. Logits ``(N, T, V)`` (language
models, token classifiers) are explained at one position per sample.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional, Union

import torch

Position = Union[None, int, torch.Tensor]


def is_token_input(inputs: torch.Tensor) -> bool:
    """Whether ``inputs`` are token ids (an integer tensor)."""
    return not (inputs.is_floating_point() or inputs.is_complex()) and inputs.dtype != torch.bool


def is_token_ids(inputs: torch.Tensor) -> bool:
    """Whether ``inputs`` are integer token ids (N, T) rather than floating values."""
    return inputs.ndim == 2 and is_token_input(inputs)


def logits_of(output: Any) -> torch.Tensor:
    """Return ``output.logits`` for a Hugging Face ``ModelOutput`` (anything with ``logits``), else ``output``.

    Raises
    ------
    TypeError
        If the result is not a tensor.
    """
    logits = output if isinstance(output, torch.Tensor) else getattr(output, "logits", output)
    if not isinstance(logits, torch.Tensor):
        raise TypeError(
            f"the model returned {type(output).__name__}; attributors need a tensor of scores or an output with "
            "a `logits` tensor (e.g. a Hugging Face ModelOutput)"
        )
    return logits


def input_embedding(model: torch.nn.Module) -> torch.nn.Module:
    """Return the module whose output is the token embedding: ``model.get_input_embeddings()`` when the
    model has it (Hugging Face), else its first ``nn.Embedding``.

    Raises
    ------
    ValueError
        If the model has neither.
    """
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        embedding = getter()
        if isinstance(embedding, torch.nn.Module):
            return embedding
    embedding = next((module for module in model.modules() if isinstance(module, torch.nn.Embedding)), None)
    if embedding is None:
        raise ValueError(
            "token-id inputs need an input embedding: the model has no get_input_embeddings() and no nn.Embedding; "
            "pass float inputs (e.g. the embeddings) instead"
        )
    return embedding


def last_positions(tokens: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Per sample, the index of the last attended token (the last position without a mask)."""
    length = tokens.shape[1]
    if attention_mask is None or attention_mask.dim() != 2:
        return torch.full((tokens.shape[0],), length - 1, dtype=torch.long, device=tokens.device)
    attended = attention_mask[:, -length:] != 0
    return (length - 1 - attended.flip(1).to(torch.uint8).argmax(dim=1)).to(device=tokens.device, dtype=torch.long)


def explained_logits(logits: torch.Tensor, tokens: torch.Tensor, position: Position, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """The logits that are explained for token inputs: ``(N, K)`` as they are; ``(N, T, V)`` at one
    position per sample.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, K)`` or ``(N, T, V)``.
    tokens : torch.Tensor
        The token ids ``(N, T)``.
    position : None, int or torch.Tensor
        None: the last attended token of each sample (the last position when there is no
        ``attention_mask``); an int (negative counts from the end) or per-sample indices ``(N,)``.
    attention_mask : torch.Tensor, optional
        The model's attention mask ``(N, T)`` (non-zero = attended); other shapes are ignored.

    Raises
    ------
    ValueError
        If ``logits`` has another number of dimensions or the position is out of range.
    """
    if logits.dim() == 2:
        return logits
    if logits.dim() != 3:
        raise ValueError(f"token inputs need logits (N, K) or (N, T, V), got shape {tuple(logits.shape)}")
    batch, length = logits.shape[:2]
    if position is None:
        indices = last_positions(tokens, attention_mask).to(logits.device)
    else:
        indices = torch.as_tensor(position, device=logits.device).long().reshape(-1).expand(batch)
        if bool(((indices < -length) | (indices >= length)).any()):
            raise ValueError(f"position must lie in [-{length}, {length}), got {position!r}")
        indices = indices % length
    return logits[torch.arange(batch, device=logits.device), indices]


@contextlib.contextmanager
def captured_embedding(model: torch.nn.Module) -> Iterator[list]:
    """Within the block, the first output of the model's input embedding is replaced by a detached
    copy that requires grad (a leaf whose gradient is the tokens' gradient), appended to the yielded list.

    The hook is removed on exit, also when the block raises.
    """
    captured: list = []

    def capture(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> Optional[torch.Tensor]:
        if captured or not isinstance(output, torch.Tensor):
            return None
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf

    handle = input_embedding(model).register_forward_hook(capture)
    try:
        yield captured
    finally:
        handle.remove()


def class_scores(outputs: Any, inputs: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> Any:
    """The class scores (B, classes) in a model's outputs for ``inputs``.

    An object with ``logits`` (a Hugging Face ``ModelOutput``) gives its logits; for token-id inputs,
    per-position logits (B, T, V) of a language model give those at each sample's last attended
    token, the position the attributors explain by default (:func:`explained_logits`). Anything else
    is returned as it is (the metrics check that it holds class scores).

    Parameters
    ----------
    outputs : tensor or object with ``logits``
        What the model returned for ``inputs``.
    inputs : torch.Tensor
        The model's input (token ids or values).
    attention_mask : torch.Tensor, optional
        Which tokens are attended (N, T); picks each sample's last attended position.

    Returns
    -------
    torch.Tensor or object
        The class scores, or ``outputs``' logits (or ``outputs``) as they are.
    """
    logits = outputs if isinstance(outputs, torch.Tensor) else getattr(outputs, "logits", outputs)
    if isinstance(logits, torch.Tensor) and logits.ndim == 3 and is_token_ids(inputs):
        return explained_logits(logits, inputs, None, attention_mask)
    return logits
