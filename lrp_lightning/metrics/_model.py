"""Running the user's model: eval mode without autograd, user state restored, target scores read off."""
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn


Model = Callable[..., Any]


@contextmanager
def evaluation_mode(model: Model) -> Iterator[None]:
    """Put ``model`` (if an ``nn.Module``) in eval mode under ``torch.no_grad()``; restore every
    submodule's ``training`` flag on exit, also when the body raises."""
    modules = list(model.modules()) if isinstance(model, nn.Module) else []
    flags = [module.training for module in modules]
    try:
        for module in modules:
            module.training = False
        with torch.no_grad():
            yield
    finally:
        for module, flag in zip(modules, flags):
            module.training = flag


def check_classes(outputs: Tensor, target: Tensor) -> None:
    """Check that ``outputs`` are class scores (B, classes) and every index in ``target`` is a class.

    Raises ``ValueError`` otherwise.
    """
    if not isinstance(outputs, Tensor) or outputs.ndim != 2:
        shape = tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
        raise ValueError(f"the model must return scores of shape (batch, classes), got {shape}")
    num_classes = outputs.shape[1]
    if bool((target >= num_classes).any()):
        raise ValueError(f"target out of range: the model has {num_classes} classes, got {target.tolist()}")


def target_scores(outputs: Tensor, target: Tensor, softmax: bool) -> Tensor:
    """Score of each row's target class: the logit, or the softmax probability with ``softmax=True``."""
    if softmax:
        outputs = outputs.softmax(dim=1)
    return outputs.gather(1, target[:, None])[:, 0]
