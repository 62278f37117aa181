"""Attributors: gradient-based explanations of a model, with or without an LRP composite.

An attributor wraps a model and an optional :class:`~lrp_lightning.core.Composite`. Used as a context
manager it registers the composite on entry and removes it on exit; calling it returns the model
output and the relevance (the attribution, shaped like the input)::

    with Gradient(model, composite) as attributor:
        output, relevance = attributor(inputs, attr_output)

``attr_output`` selects what is explained (see :func:`grad_outputs`), as in zennit: an
output-shaped tensor used as the output gradient (e.g. a one-hot), a callable ``output -> tensor``,
or ``None`` for the attributor's default (``attr_output=`` of its constructor; if that is None too,
the output itself). Beyond zennit, class indices ``(N,)`` or a single class ``int`` select one-hot
outputs. A model output with ``logits`` (a Hugging Face ``ModelOutput``) is explained through its
logits.

With a composite whose ``gradient_view`` is True (the transformer composites ``AttnLRP``, ``CPLRP``)
the backward pass carries a modified gradient ``g`` and the attributors return ``input * g``.

Models with several inputs (beyond zennit 0.5.1, as zennit 1.0): a tuple (or list) of input tensors
``(x1, x2, ...)``, all with the same batch size ``N``, is passed to the model as positional
arguments, ``model(x1, x2, ..., **model_kwargs)``, and the relevance comes back as a tuple with one
entry per input, of that input's shape::

    with Gradient(model, composite) as attributor:
        output, (relevance_1, relevance_2) = attributor((x1, x2), attr_output)

Every floating-point input is explained (SmoothGrad noises each one, IntegratedGradients integrates
each one from its own baseline, Occlusion occludes each one in turn while the others keep their
values); an input of another dtype (e.g. integer indices) is passed through unexplained and gets
relevance ``None``. Keyword arguments of a call (``model_kwargs``) are passed to the model and not
explained, by every attributor; for the attributors that evaluate the model on perturbed copies of
the samples (SmoothGrad, IntegratedGradients, Occlusion) a keyword tensor whose first dimension is
the batch size ``N`` is taken as per-sample and follows its sample, any other value is passed as it
is.

:class:`Gradient` also explains token inputs: integer token ids ``(N, T)`` (model keyword arguments
such as ``attention_mask=`` are passed through) give relevance ``(N, T)``, per token the sum over the
hidden dimension of its input-embedding output times its (modified) gradient (see
:mod:`lrp_lightning.transformer.tokens`)::

    with Gradient(model, AttnLRP()) as attributor:
        output, relevance = attributor(input_ids, target, attention_mask=attention_mask)

Every attributor leaves what the user owns as it was: parameters, buffers (also when a forward in
training mode would update BatchNorm statistics), ``training`` and ``requires_grad`` flags, ``.grad``
of the parameters, hooks, and the global random state (torch CPU/CUDA, numpy, :mod:`random`); the
context managers that preserve them are in :mod:`lrp_lightning.model_state`.
Randomness (SmoothGrad noise) comes only from a :class:`torch.Generator` seeded per call.
SmoothGrad, IntegratedGradients and Occlusion push all their model evaluations through the model in
large chunks of at most ``batch_size`` samples.
"""
from __future__ import annotations

import contextlib
import numbers
from typing import Any, Callable, Iterator, Optional, Sequence, Type, TypeVar, Union

import numpy as np
import torch

from lrp_lightning import _arguments
from lrp_lightning.core import _graph_leaf, differentiable
from lrp_lightning.model_state import frozen_parameters, preserved_buffers, preserved_random_state
from lrp_lightning.transformer.tokens import Position, captured_embedding, explained_logits, is_token_input, logits_of

Target = Union[None, int, torch.Tensor, Callable[[torch.Tensor], Any]]
BaselineSpec = Union[None, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]
Baseline = Union[BaselineSpec, tuple]
Inputs = Union[torch.Tensor, Sequence[torch.Tensor]]
Relevance = Union[torch.Tensor, tuple]
WindowSpec = Union[int, Sequence[int]]

DEFAULT_BATCH_SIZE = 64

ATTRIBUTORS: dict[str, Type["Attributor"]] = {}

AttributorType = TypeVar("AttributorType", bound=Type["Attributor"])


def register_attributor(name: str) -> Callable[[AttributorType], AttributorType]:
    """Return a class decorator that registers an attributor class in :data:`ATTRIBUTORS`.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"gradient"``.

    Returns
    -------
    callable
        Decorator returning the class unchanged.
    """
    def decorator(cls: AttributorType) -> AttributorType:
        ATTRIBUTORS[name] = cls
        return cls

    return decorator


def get_attributor(name: str) -> Type["Attributor"]:
    """Return the attributor class registered under ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`ATTRIBUTORS`.

    Returns
    -------
    type
        The attributor class.

    Raises
    ------
    KeyError
        If no attributor is registered under ``name``; the message lists the known names.
    """
    try:
        return ATTRIBUTORS[name]
    except KeyError:
        known = ", ".join(sorted(ATTRIBUTORS))
        raise KeyError(f"unknown attributor {name!r}; registered attributors: {known}") from None


def grad_outputs(target: Target, output: torch.Tensor) -> torch.Tensor:
    """Turn a target specification into the gradient fed back at the model output.

    Parameters
    ----------
    target : None, int, torch.Tensor or callable
        ``None``: the output itself (zennit's default). ``int`` or a 0-d integer tensor: that
        class for every sample. Integer tensor ``(N,)``: one class per sample. Floating tensor
        broadcastable to ``output.shape``: used as the output gradient as is. Callable: called on the
        detached output; its result is resolved by the same rules. Lists and numpy arrays are
        read as tensors.
    output : torch.Tensor
        Model output ``(N, K, ...)``; class indices select along dim 1 (and every position of any
        further dims).

    Returns
    -------
    torch.Tensor
        Tensor of ``output``'s shape, dtype and device.

    Raises
    ------
    ValueError
        If class indices are out of range, their number does not match the batch, the output has no
        class dimension, or a tensor target does not broadcast to the output.
    TypeError
        If ``target`` is none of the above.

    Examples
    --------
    The predicted class: ``grad_outputs(lambda output: output.argmax(1), output)``.
    """
    output = output.detach()
    if callable(target) and not isinstance(target, torch.Tensor):
        target = target(output)
        if callable(target) and not isinstance(target, torch.Tensor):
            raise TypeError("a callable target must return a target, not another callable")
    if isinstance(target, (list, tuple, np.ndarray)):
        target = torch.as_tensor(np.asarray(target))
    if target is None:
        return output.clone()
    if isinstance(target, bool) or not isinstance(target, (numbers.Integral, torch.Tensor)):
        raise TypeError(f"target must be None, an int, a tensor or a callable, got "
                        f"{type(target).__name__}")
    if isinstance(target, torch.Tensor) and target.is_floating_point():
        try:
            return torch.broadcast_to(target.to(output), output.shape).clone()
        except RuntimeError:
            raise ValueError(f"target of shape {tuple(target.shape)} does not broadcast to the "
                             f"output shape {tuple(output.shape)}") from None
    return _one_hot(torch.as_tensor(int(target) if isinstance(target, numbers.Integral) else target,
                                    device=output.device), output)


def _one_hot(indices: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """Return an output-shaped tensor with ones at class ``indices`` along dim 1."""
    if output.ndim < 2:
        raise ValueError(f"class indices need an output with a class dimension, got shape "
                         f"{tuple(output.shape)}")
    batch, classes = output.shape[:2]
    indices = indices.reshape(-1).long()
    if indices.numel() == 1:
        indices = indices.expand(batch)
    if indices.numel() != batch:
        raise ValueError(f"got {indices.numel()} class indices for a batch of {batch}")
    if bool(((indices < 0) | (indices >= classes)).any()):
        raise ValueError(f"class indices must lie in [0, {classes}), got {indices.tolist()}")
    selected = torch.zeros(batch, classes, dtype=output.dtype, device=output.device)
    selected[torch.arange(batch, device=output.device), indices] = 1
    return selected.reshape(batch, classes, *([1] * (output.ndim - 2))).expand(output.shape).clone()


def identity(obj: Any) -> Any:
    """Return ``obj`` (the default ``attr_output`` function: the model output itself).

    Parameters
    ----------
    obj : object
        Anything.

    Returns
    -------
    object
        ``obj``.
    """
    return obj


def constant(obj: Any) -> Callable[..., Any]:
    """Return a function that ignores its arguments and returns ``obj``.

    Parameters
    ----------
    obj : object
        The constant.

    Returns
    -------
    callable
        ``(*args, **kwargs) -> obj``.
    """
    def wrapped_const(*args: Any, **kwargs: Any) -> Any:
        return obj

    return wrapped_const


def occlude_independent(input: torch.Tensor, mask: torch.Tensor,
                        fill_fn: Callable[[torch.Tensor], torch.Tensor] = torch.zeros_like,
                        invert: bool = False) -> torch.Tensor:
    """Return ``input`` with the elements where ``mask`` is zero replaced by ``fill_fn(input)``.

    This is what zennit 0.5.1 does (its docstring states the opposite): ``mask`` marks what is kept.

    Parameters
    ----------
    input : torch.Tensor
        The input.
    mask : torch.Tensor
        Boolean (or 0/1) mask broadcastable to ``input``.
    fill_fn : callable, optional
        ``input -> tensor of input's shape`` giving the replacement values (default zeros).
    invert : bool, optional
        Occlude where ``mask`` is non-zero instead.

    Returns
    -------
    torch.Tensor
        A new tensor.
    """
    keep = mask.bool()
    if invert:
        keep = ~keep
    return torch.where(keep, input, fill_fn(input))


def _checked_inputs(inputs: Any) -> Union[torch.Tensor, tuple]:
    """``inputs`` checked: a tensor, or a tuple for a tuple or list of tensors."""
    if isinstance(inputs, torch.Tensor):
        return inputs
    if not isinstance(inputs, (tuple, list)):
        raise TypeError(f"inputs must be a tensor or a tuple of tensors (one per model input), got {type(inputs).__name__}")
    if not inputs:
        raise ValueError("inputs is an empty tuple; pass one tensor per model input")
    for index, value in enumerate(inputs):
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"inputs[{index}] is a {type(value).__name__}, not a tensor; a tuple of inputs holds one tensor per "
                "positional model input, pass other model arguments as keyword arguments"
            )
    sizes = [value.shape[0] if value.ndim else None for value in inputs]
    if None in sizes or len(set(sizes)) != 1:
        shapes = ", ".join(str(tuple(value.shape)) for value in inputs)
        raise ValueError(f"the inputs must share their first (batch) dimension, got shapes {shapes}")
    if not any(value.is_floating_point() for value in inputs):
        raise TypeError("none of the inputs is floating point; a tuple of inputs needs at least one float tensor to explain")
    return tuple(inputs)


def _graph_input(value: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """The caller's input as an attributor works on it: a detached copy, or with ``create_graph`` the
    caller's tensor itself when it requires grad (so the relevance is differentiable with respect to it)."""
    if create_graph and value.requires_grad:
        return value
    return value.detach().clone()


def _as_tuple(inputs: Union[torch.Tensor, tuple]) -> tuple:
    """``inputs`` as a tuple of tensors (a single tensor becomes a 1-tuple)."""
    return inputs if isinstance(inputs, tuple) else (inputs,)


def _like(inputs: Union[torch.Tensor, tuple], relevances: Sequence[Optional[torch.Tensor]]) -> Relevance:
    """``relevances`` in the form of ``inputs``: a tuple for a tuple, else its single entry."""
    return tuple(relevances) if isinstance(inputs, tuple) else relevances[0]


def _sample_rows(model_kwargs: dict, sample: torch.Tensor, batch: int) -> dict:
    """``model_kwargs`` for the rows ``sample`` of a virtual batch: tensors whose first dimension is
    the batch size are indexed by ``sample``, other values kept."""
    return {
        name: value[sample] if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == batch else value
        for name, value in model_kwargs.items()
    }


def _chunks(total: int, size: int) -> Iterator[torch.Tensor]:
    """Yield consecutive index ranges ``arange(start, stop)`` of at most ``size`` covering ``total``."""
    for start in range(0, total, size):
        yield torch.arange(start, min(start + size, total))


class Attributor:
    """Base class: a model plus an optional composite, used as a context manager and called.

    Parameters
    ----------
    model : torch.nn.Module
        The model to explain.
    composite : Composite, optional
        A composite registered on the model while the attributor is entered (unless it is registered
        already); ``None`` gives plain gradients.
    attr_output : None, int, torch.Tensor or callable, optional
        The default ``attr_output`` of calls, see :func:`grad_outputs`; None: the output itself.

    Notes
    -----
    Subclasses implement :meth:`forward`. Calling an attributor outside ``with`` enters and exits
    around the call.
    """

    create_graph: bool = False
    retain_graph: Optional[bool] = None

    def __init__(self, model: torch.nn.Module, composite: Optional[Any] = None,
                 attr_output: Target = None) -> None:
        if not callable(model):
            raise TypeError(f"model must be a callable (an nn.Module), got {type(model).__name__}")
        if composite is not None and not callable(getattr(composite, "context", None)):
            raise TypeError(f"composite must be a Composite (with a context() method) or None, got {composite!r}")
        self.model = model
        self.composite = composite
        self.attr_output = attr_output
        self._stack: Optional[contextlib.ExitStack] = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(composite={self.composite!r})"

    @property
    def inactive(self) -> Callable[[], Any]:
        """The composite's ``inactive`` context, for ``with attributor.inactive():`` (plain gradients
        inside); without a composite, a context that does nothing."""
        return contextlib.nullcontext if self.composite is None else self.composite.inactive

    def _uses_composite(self) -> bool:
        """Whether entering registers the composite (there is one, and it is not registered yet)."""
        return self.composite is not None and not self.composite.handles

    def _gradient_view(self) -> bool:
        """Whether the composite's backward pass carries gradients (relevance = input * gradient)."""
        return self.composite is not None and bool(getattr(self.composite, "gradient_view", False))

    def _scores(self, inputs: Sequence[torch.Tensor], model_kwargs: dict) -> torch.Tensor:
        """The model's scores for the inputs (one tensor per positional argument): its output, or the output's ``logits``."""
        return logits_of(self.model(*inputs, **model_kwargs))

    def __enter__(self) -> "Attributor":
        if self._stack is not None:
            raise RuntimeError(f"{type(self).__name__} is already entered")
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(preserved_buffers(self.model))
            if self._uses_composite():
                stack.enter_context(self.composite.context(self.model))
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc_info: Any) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def __call__(self, inputs: Inputs, attr_output: Target = None,
                 **model_kwargs: Any) -> tuple[torch.Tensor, Relevance]:
        """Explain ``inputs``.

        Parameters
        ----------
        inputs : torch.Tensor or tuple of torch.Tensor
            Input batch ``(N, ...)``; for :class:`Gradient` also token ids ``(N, T)``. For a model
            with several inputs, a tuple (or list) ``(x1, x2, ...)`` of tensors with the same batch
            size ``N``, passed as ``model(x1, x2, ...)``; floating-point entries are explained,
            others (e.g. integer indices) passed through.
        attr_output : None, int, torch.Tensor or callable, optional
            What to explain, see :func:`grad_outputs`; ``None``: the attributor's ``attr_output``
            (if that is None too, the output itself).
        **model_kwargs
            Keyword arguments passed to the model and not explained (e.g. ``attention_mask``; for
            the attributors that evaluate perturbed copies, tensors whose first dimension is ``N``
            follow their sample) and, for token inputs, ``position`` (see
            :meth:`Gradient.explain_tokens`).

        Returns
        -------
        output : torch.Tensor
            The model output (its ``logits`` for a ``ModelOutput``; for token inputs the explained
            logits, see :meth:`Gradient.explain_tokens`), detached.
        relevance : torch.Tensor or tuple
            The attribution, with the shape of ``inputs`` (attached to its graph with
            ``create_graph=True``); for a tuple of inputs a tuple with one relevance per input, None
            for the inputs that are not floating point.

        Raises
        ------
        TypeError
            If token ids are given to an attributor other than :class:`Gradient`, ``position`` with
            float inputs, or a tuple of inputs holds a non-tensor or no float tensor.
        ValueError
            If the tensors of a tuple of inputs differ in their batch size (or the tuple is empty).
        """
        inputs = _checked_inputs(inputs)
        tokens = isinstance(inputs, torch.Tensor) and is_token_input(inputs)
        if tokens and not isinstance(self, Gradient):
            raise TypeError(f"{type(self).__name__} takes float inputs; explain token ids with Gradient")
        if "position" in model_kwargs and not tokens:
            raise TypeError("position= selects the explained position for token-id inputs; float inputs take none")
        target = self.attr_output if attr_output is None else attr_output
        entered_here = self._stack is None
        with contextlib.ExitStack() as stack:
            if entered_here:
                stack.enter_context(self)
            stack.enter_context(preserved_random_state(_as_tuple(inputs)[0].device))
            if not self.create_graph:
                stack.enter_context(frozen_parameters(self.model))
            stack.enter_context(differentiable(self.create_graph))
            stack.enter_context(torch.inference_mode(False))
            stack.enter_context(torch.enable_grad())
            inputs = _like(inputs, [_graph_input(value, self.create_graph) for value in _as_tuple(inputs)])
            if tokens:
                output, relevance = self.explain_tokens(inputs, target, **model_kwargs)
            else:
                output, relevance = self.forward(inputs, target, **model_kwargs)
        if not self.create_graph:
            relevance = _like(inputs, [None if part is None else part.detach() for part in _as_tuple(relevance)])
        return output.detach(), relevance

    def forward(self, inputs: Union[torch.Tensor, tuple], target: Target,
                **model_kwargs: Any) -> tuple[torch.Tensor, Relevance]:
        """Compute output and relevance; called by :meth:`__call__` with gradients enabled.

        Parameters
        ----------
        inputs : torch.Tensor or tuple of torch.Tensor
            A detached copy of the input batch (a tuple for a model with several inputs).
        target : None, int, torch.Tensor or callable
            What to explain.
        **model_kwargs
            Keyword arguments of the model.

        Returns
        -------
        output : torch.Tensor
            Model output.
        relevance : torch.Tensor or tuple
            Attribution, in the form of ``inputs`` (a tuple with None for inputs not explained).
        """
        raise NotImplementedError

    def _gradient(self, inputs: Union[torch.Tensor, tuple], target: Target,
                  model_kwargs: dict) -> tuple[torch.Tensor, Relevance]:
        """Return the model output and the (composite-modified) gradient of the target output for
        every float input; in the gradient view, the input times that gradient."""
        leaves = [_graph_leaf(value, self.create_graph) if value.is_floating_point() else value for value in _as_tuple(inputs)]
        explained = [leaf for leaf in leaves if leaf.is_floating_point()]
        output = logits_of(self.model(*leaves, **model_kwargs))
        gradients = iter(torch.autograd.grad(output, explained, grad_outputs(target, output), allow_unused=True,
                                             create_graph=self.create_graph, retain_graph=self.retain_graph))
        relevances = []
        for leaf in leaves:
            if not leaf.is_floating_point():
                relevances.append(None)
                continue
            gradient = next(gradients)
            if gradient is None:
                gradient = torch.zeros_like(leaf)
            elif self._gradient_view():
                gradient = (leaf if self.create_graph else leaf.detach()) * gradient
            relevances.append(gradient)
        return output.detach(), _like(inputs, relevances)


@register_attributor("gradient")
class Gradient(Attributor):
    """The gradient of the target output with respect to the input; with a composite, LRP.

    Parameters
    ----------
    model : torch.nn.Module
        The model to explain.
    composite : Composite, optional
        Composite modifying the backward pass (``None``: the plain gradient).
    attr_output : None, int, torch.Tensor or callable, optional
        Default ``attr_output`` of calls, see :func:`grad_outputs`.
    create_graph : bool, optional
        Build the graph of the gradient computation, for higher-order gradients.
    retain_graph : bool, optional
        Keep the graph after the gradient computation; default: ``create_graph``.
    """

    def __init__(self, model: torch.nn.Module, composite: Optional[Any] = None, attr_output: Target = None,
                 create_graph: bool = False, retain_graph: Optional[bool] = None) -> None:
        super().__init__(model, composite, attr_output)
        self.create_graph = create_graph
        self.retain_graph = retain_graph

    def forward(self, inputs: Union[torch.Tensor, tuple], target: Target,
                **model_kwargs: Any) -> tuple[torch.Tensor, Relevance]:
        """Return the output and the gradient of the target output, see :meth:`Attributor.forward`."""
        return self._gradient(inputs, target, model_kwargs)

    def explain_tokens(
        self, tokens: torch.Tensor, target: Target = None, position: Position = None, **model_kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Explain token ids ``(N, T)``; called by :meth:`__call__` for integer inputs.

        The output of the model's input embedding (see :func:`lrp_lightning.transformer.tokens.input_embedding`)
        ``e`` ``(N, T, H)`` is where relevance is read: per token ``sum_h e * g`` for the gradient
        ``g`` at ``e`` (without a composite this is gradient x input; a composite that carries
        relevance instead of gradients gives ``sum_h g``). Position or token-type embeddings added
        later take their own share. Only the first call of the embedding in a forward pass is read.

        Parameters
        ----------
        tokens : torch.Tensor
            Integer token ids ``(N, T)``.
        target : None, int, torch.Tensor or callable
            Class or next-token indices ``(N,)`` etc., see :func:`grad_outputs`, applied to the
            explained logits.
        position : None, int or torch.Tensor
            For logits ``(N, T, V)``: the explained position (None: the last attended token), see
            :func:`lrp_lightning.transformer.tokens.explained_logits`.
        **model_kwargs
            Passed to the model (e.g. ``attention_mask``).

        Returns
        -------
        output : torch.Tensor
            The explained logits ``(N, K)`` (for ``(N, T, V)`` logits, those at the explained position).
        relevance : torch.Tensor
            ``(N, T)``.
        """
        with captured_embedding(self.model) as captured:
            output = self.model(tokens, **model_kwargs)
        if not captured:
            raise ValueError("the model's input embedding was not called with the token ids; pass float inputs instead")
        embedding = captured[0]
        logits = explained_logits(logits_of(output), tokens, position, model_kwargs.get("attention_mask"))
        gradient, = torch.autograd.grad(logits, embedding, grad_outputs(target, logits))
        if self._gradient_view() or self.composite is None:
            gradient = embedding.detach() * gradient
        return logits.detach(), gradient.sum(dim=-1)


class _PathAttributor(Attributor):
    """Averages gradients over ``n_iter`` perturbed copies of each input, in chunked batches.

    Row ``k * N + i`` of the virtual batch is copy ``k`` of sample ``i``; :meth:`_perturbed` builds
    the rows of one chunk.
    """

    def __init__(self, model: torch.nn.Module, composite: Optional[Any] = None, attr_output: Target = None,
                 create_graph: bool = False, retain_graph: Optional[bool] = None, n_iter: int = 20,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        super().__init__(model, composite, attr_output)
        self.create_graph = _arguments.boolean("create_graph", create_graph)
        self.retain_graph = None if retain_graph is None else _arguments.boolean("retain_graph", retain_graph)
        self.n_iter = _arguments.integer("n_iter", n_iter, minimum=1)
        self.batch_size = _arguments.integer("batch_size", batch_size, minimum=1)

    def _perturbed(self, inputs: tuple, iteration: torch.Tensor, sample: torch.Tensor, context: Any) -> tuple:
        """Return the rows of every input for the given (iteration, sample) index pairs: new tensors,
        perturbed for the float inputs."""
        raise NotImplementedError

    def _mean_gradient(self, inputs: tuple, target: Target, model_kwargs: dict,
                       context: Any, times_input: bool = False) -> tuple[torch.Tensor, list]:
        """Return the clean output and, per input, the gradient averaged over all perturbed copies
        (with ``times_input``, the perturbed copy times its gradient; None for inputs not float)."""
        output = self._scores(inputs, model_kwargs).detach()
        weights = grad_outputs(target, output)
        explained = [index for index, value in enumerate(inputs) if value.is_floating_point()]
        totals = {index: torch.zeros_like(inputs[index]) for index in explained}
        batch = inputs[0].shape[0]
        for rows in _chunks(self.n_iter * batch, self.batch_size):
            rows = rows.to(inputs[0].device)
            sample = rows % batch
            perturbed = self._perturbed(inputs, rows // batch, sample, context)
            leaves = [perturbed[index].requires_grad_(True) for index in explained]
            scores = self._scores(perturbed, _sample_rows(model_kwargs, sample, batch))
            gradients = torch.autograd.grad(scores, leaves, weights[sample], allow_unused=True,
                                            create_graph=self.create_graph, retain_graph=self.retain_graph)
            for index, leaf, gradient in zip(explained, leaves, gradients):
                if gradient is None:
                    continue
                if times_input:
                    gradient = (leaf if self.create_graph else leaf.detach()) * gradient
                totals[index].index_add_(0, sample, gradient)
        return output, [totals[index] / self.n_iter if index in totals else None for index in range(len(inputs))]


@register_attributor("smoothgrad")
class SmoothGrad(_PathAttributor):
    """SmoothGrad (Smilkov et al., 2017): the gradient averaged over noisy copies of the input.

    With a gradient-view composite (``composite.gradient_view``), the average of each noisy copy
    times its modified gradient (its relevance). With several inputs every float input is noised,
    each with its own standard deviation.

    Parameters
    ----------
    model : torch.nn.Module
        The model to explain.
    composite : Composite, optional
        Composite modifying the backward pass (``None``: plain gradients).
    attr_output : None, int, torch.Tensor or callable, optional
        Default ``attr_output`` of calls, see :func:`grad_outputs`.
    create_graph : bool, optional
        Build the graph of the gradient computation, for higher-order gradients.
    retain_graph : bool, optional
        Keep the graph after the gradient computation; default: ``create_graph``.
    noise_level : float, optional
        Noise standard deviation as a fraction of each sample's value range (max - min).
    n_iter : int, optional
        Number of noisy copies per sample.
    seed : int, optional
        Seed of the noise generator, used afresh on every call (same inputs, same result);
        ``None`` draws a fresh seed per call, without touching the global random state.
    batch_size : int, optional
        Most samples per forward pass.
    """

    def __init__(self, model: torch.nn.Module, composite: Optional[Any] = None, attr_output: Target = None,
                 create_graph: bool = False, retain_graph: Optional[bool] = None,
                 noise_level: float = 0.1, n_iter: int = 20, seed: Optional[int] = None,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        super().__init__(model, composite, attr_output, create_graph, retain_graph, n_iter, batch_size)
        self.noise_level = _arguments.real_number("noise_level", noise_level, minimum=0.0)
        self.seed = None if seed is None else _arguments.integer("seed", seed)

    def forward(self, inputs: Union[torch.Tensor, tuple], target: Target,
                **model_kwargs: Any) -> tuple[torch.Tensor, Relevance]:
        """Return the output and the mean gradient over noisy inputs."""
        tensors = _as_tuple(inputs)
        generator = torch.Generator(device=tensors[0].device)
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        stds = [self._noise_std(value) if value.is_floating_point() else None for value in tensors]
        output, relevances = self._mean_gradient(tensors, target, model_kwargs, (generator, stds),
                                                 times_input=self._gradient_view())
        return output, _like(inputs, relevances)

    def _noise_std(self, inputs: torch.Tensor) -> torch.Tensor:
        """``noise_level`` times each sample's value range, shaped to broadcast over the sample."""
        flat = inputs.detach().reshape(inputs.shape[0], -1)
        value_range = flat.amax(dim=1) - flat.amin(dim=1)
        return (self.noise_level * value_range).reshape(-1, *([1] * (inputs.ndim - 1)))

    def _perturbed(self, inputs: tuple, iteration: torch.Tensor, sample: torch.Tensor,
                   context: tuple[torch.Generator, list]) -> tuple:
        generator, stds = context
        perturbed = []
        for value, std in zip(inputs, stds):
            rows = value[sample]
            if std is not None:
                noise = torch.randn(rows.shape, generator=generator, device=rows.device, dtype=rows.dtype)
                rows = rows + noise * std[sample]
            perturbed.append(rows)
        return tuple(perturbed)


@register_attributor("integrated_gradients")
class IntegratedGradients(_PathAttributor):
    """Integrated Gradients (Sundararajan et al., 2017) with a right Riemann sum.

    The relevance is ``(x - b) * mean_k grad f(b + k/n_iter * (x - b))`` for ``k = 1..n_iter``;
    it sums to ``f(x) - f(b)`` in the limit (completeness). With a composite the gradients are the
    composite's modified gradients (for a gradient-view composite: the same formula). With several
    inputs every float input moves along the path from its own baseline (completeness then holds
    for the sum over all inputs).

    Parameters
    ----------
    model : torch.nn.Module
        The model to explain.
    composite : Composite, optional
        Composite modifying the backward pass (``None``: plain gradients).
    attr_output : None, int, torch.Tensor or callable, optional
        Default ``attr_output`` of calls, see :func:`grad_outputs`.
    create_graph : bool, optional
        Build the graph of the gradient computation, for higher-order gradients.
    retain_graph : bool, optional
        Keep the graph after the gradient computation; default: ``create_graph``.
    baseline_fn : callable, optional
        zennit's baseline argument: ``inputs -> baseline tensor``; zeros when None. With several
        inputs it is applied to each float input.
    n_iter : int, optional
        Number of points on the straight path from the baseline to the input.
    baseline : torch.Tensor, callable or tuple, optional
        Alternative to ``baseline_fn``: a tensor broadcastable to the input, or a callable
        ``inputs -> tensor`` (with several inputs: applied to each float input). For several
        inputs also a tuple with one entry per input (a tensor, a callable or None for zeros;
        ignored for inputs that are not floating point).
    batch_size : int, optional
        Most samples per forward pass.

    Raises
    ------
    ValueError
        If both ``baseline_fn`` and ``baseline`` are given; in a call, if a baseline does not
        broadcast to its input or a tuple of baselines does not match the inputs.
    """

    def __init__(self, model: torch.nn.Module, composite: Optional[Any] = None, attr_output: Target = None,
                 create_graph: bool = False, retain_graph: Optional[bool] = None,
                 baseline_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, n_iter: int = 20,
                 baseline: Baseline = None, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        super().__init__(model, composite, attr_output, create_graph, retain_graph, n_iter, batch_size)
        if baseline_fn is not None and baseline is not None:
            raise ValueError("give either baseline_fn (zennit's name) or baseline, not both")
        _arguments.optional_callable("baseline_fn", baseline_fn)
        if isinstance(baseline, tuple):
            baseline = tuple(_baseline_spec(f"baseline[{index}]", spec) for index, spec in enumerate(baseline))
        else:
            baseline = _baseline_spec("baseline", baseline)
        self.baseline = baseline_fn if baseline is None else baseline

    def _baselines_for(self, inputs: tuple, several: bool) -> list:
        """Return the baseline of each float input broadcast to its shape (None for other inputs)."""
        specs = self.baseline
        if isinstance(specs, tuple):
            if not several or len(specs) != len(inputs):
                raise ValueError(f"a tuple of {len(specs)} baselines needs a tuple of as many inputs, got "
                                 f"{len(inputs) if several else 'a single tensor'}")
        else:
            specs = (specs,) * len(inputs)
        return [_baseline_for(value, spec) if value.is_floating_point() else None for value, spec in zip(inputs, specs)]

    def forward(self, inputs: Union[torch.Tensor, tuple], target: Target,
                **model_kwargs: Any) -> tuple[torch.Tensor, Relevance]:
        """Return the output and the integrated gradients."""
        tensors = _as_tuple(inputs)
        baselines = self._baselines_for(tensors, isinstance(inputs, tuple))
        output, mean_gradients = self._mean_gradient(tensors, target, model_kwargs, baselines)
        relevances = [None if baseline is None else (value - baseline) * mean_gradient
                      for value, baseline, mean_gradient in zip(tensors, baselines, mean_gradients)]
        return output, _like(inputs, relevances)

    def _perturbed(self, inputs: tuple, iteration: torch.Tensor, sample: torch.Tensor, context: list) -> tuple:
        perturbed = []
        for value, baseline in zip(inputs, context):
            if baseline is None:
                perturbed.append(value[sample])
                continue
            baseline = baseline[sample]
            alpha = ((iteration + 1).to(value.dtype) / self.n_iter).reshape(-1, *([1] * (value.ndim - 1)))
            perturbed.append(baseline + alpha * (value[sample] - baseline))
        return tuple(perturbed)


def _baseline_spec(name: str, spec: Any) -> BaselineSpec:
    """A baseline argument: None, a callable, or a tensor-like (as a tensor)."""
    if spec is None or callable(spec):
        return spec
    return _arguments.tensor_like(name, spec)


def _baseline_for(inputs: torch.Tensor, spec: BaselineSpec) -> torch.Tensor:
    """Return the baseline ``spec`` gives for ``inputs``, broadcast to their shape (zeros for None)."""
    if spec is None:
        return torch.zeros_like(inputs)
    baseline = spec(inputs) if callable(spec) else spec
    try:
        return torch.broadcast_to(baseline.to(inputs).detach(), inputs.shape)
    except RuntimeError:
        raise ValueError(f"baseline of shape {tuple(baseline.shape)} does not broadcast to the "
                         f"input shape {tuple(inputs.shape)}") from None


def _window_spec(name: str, value: Any) -> WindowSpec:
    """An int >= 1 or a non-empty list/tuple of them (TypeError for any other type, as zennit)."""
    try:
        if isinstance(value, (list, tuple)) and value:
            return type(value)(_arguments.sequence(name, value, lambda item, v: _arguments.integer(item, v, minimum=1)))
        return _arguments.integer(name, value, minimum=1)
    except TypeError:
        raise TypeError(f"Occlusion {name} must be an int or a tuple of ints, got {value!r}") from None


def _per_sample_dim(spec: WindowSpec, shape: torch.Size, int_from: int) -> Optional[list]:
    """``window`` or ``stride`` per sample dim of an input of ``shape`` (None: not given for that dim);
    None if the spec has more entries than the input has dims.

    An int applies to the sample dims from ``int_from`` on; a sequence to the last ``len(spec)`` dims,
    or, with one entry per dim of the input, to all of them, the first (batch) entry dropped.
    """
    sample_dims = len(shape) - 1
    if isinstance(spec, int):
        return [None] * int_from + [spec] * (sample_dims - int_from)
    values = list(spec)
    if len(values) == len(shape):
        values = values[1:]
    if len(values) > sample_dims:
        return None
    return [None] * (sample_dims - len(values)) + values


@register_attributor("occlusion")
class Occlusion(Attributor):
    """Occlusion (Zeiler and Fergus, 2014): the drop of the target score when a window is filled.

    Every window position gets ``score(x) - score(x with the window set to fill)``, where
    ``score = sum(output * grad_outputs(target, output(x)))`` per sample (``sum(output)`` for
    ``target=None``); each input element receives the mean drop of the windows covering it. Windows
    are placed every ``stride`` elements, plus one flush with the end where the stride leaves a
    remainder, so every element is covered.

    zennit 0.5.1's Occlusion differs: it sums, over padded windows, the score of the input with
    everything but the window occluded (or what ``occlusion_fn`` makes of it), with
    ``score = sum(attr_output(output))``. Here ``occlusion_fn`` only replaces how a window is filled.

    With several inputs each float input is occluded in turn, window by window, while the other
    inputs keep their values; ``window``, ``stride``, ``fill`` and ``occlusion_fn`` apply to each
    float input alike (a sequence ``window`` must fit every one of them).

    Parameters
    ----------
    model : torch.nn.Module
        The model to explain.
    composite : Composite, optional
        Accepted for a uniform call signature and ignored (occlusion needs no backward pass).
    attr_output : None, int, torch.Tensor or callable, optional
        Default ``attr_output`` of calls, see :func:`grad_outputs`.
    occlusion_fn : callable, optional
        ``(input, mask) -> occluded input`` with ``mask`` True inside the window (zennit's argument);
        replaces filling the window with ``fill``, e.g. ``partial(occlude_independent, invert=True,
        fill_fn=...)``.
    window : int or sequence of int, optional
        Window size. A sequence applies to the last ``len(window)`` dims (earlier non-batch dims are
        covered whole); one with an entry per dim of the input, batch dim included (zennit's full
        shape), applies to all dims but the batch dim, whose entry is ignored: samples are occluded
        one by one (a window across samples gives each sample the drop of its own part). An int applies to every dim after the channel dim ``1`` for inputs with
        three or more dims (``(N, C, H, W)``: ``window x window`` patches over all channels) and to
        dim 1 of ``(N, D)`` inputs. Clipped to the dim's length.
    stride : int or sequence of int, optional
        Step between windows, given like ``window`` (an int applies to every windowed dim; a
        sequence needs an entry for each).
    fill : float or torch.Tensor, optional
        Value written into the window; a tensor must broadcast to the input.
    batch_size : int, optional
        Most samples per forward pass.
    """

    def __init__(self, model: torch.nn.Module, composite: Optional[Any] = None, attr_output: Target = None,
                 occlusion_fn: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
                 window: WindowSpec = 8, stride: WindowSpec = 8,
                 fill: Union[float, torch.Tensor] = 0.0, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        super().__init__(model, composite, attr_output)
        self.batch_size = _arguments.integer("batch_size", batch_size, minimum=1)
        self.window = _window_spec("window", window)
        self.stride = _window_spec("stride", stride)
        _arguments.tensor_like("fill", fill)
        self.fill = fill
        self.occlusion_fn = _arguments.optional_callable("occlusion_fn", occlusion_fn)

    def _uses_composite(self) -> bool:
        return False

    def _window_masks(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        """Return boolean masks ``(P, *shape[1:])`` (size-1 dims where covered whole), one per window."""
        sample_shape = shape[1:]
        windows = _per_sample_dim(self.window, shape, int_from=1 if len(sample_shape) > 1 else 0)
        strides = _per_sample_dim(self.stride, shape, int_from=0)
        windowed = [dim for dim, size in enumerate(windows or []) if size is not None]
        if not windowed or strides is None or any(strides[dim] is None for dim in windowed):
            raise ValueError(f"window {self.window!r} / stride {self.stride!r} do not fit input "
                             f"shape {tuple(shape)}")
        count = len(sample_shape) - windowed[0]  # the windowed dims are the last ones
        windows, strides = windows[-count:], strides[-count:]
        masks = torch.ones(1, *([1] * (len(sample_shape) - count)), dtype=torch.bool, device=device)
        for length, size, step in zip(sample_shape[-count:], windows, strides):
            size = min(size, length)
            starts = list(range(0, length - size + 1, step))
            if starts[-1] != length - size:
                starts.append(length - size)
            start = torch.tensor(starts, device=device).unsqueeze(1)
            position = torch.arange(length, device=device)
            dim_masks = (position >= start) & (position < start + size)
            dim_masks = dim_masks.reshape(1, len(starts), *([1] * (masks.ndim - 1)), length)
            masks = (masks.unsqueeze(1).unsqueeze(-1) & dim_masks).flatten(0, 1)
        return masks

    def _fill_for(self, inputs: torch.Tensor) -> torch.Tensor:
        """Return the fill value broadcast to the shape of ``inputs``."""
        fill = torch.as_tensor(self.fill, dtype=inputs.dtype, device=inputs.device)
        try:
            return torch.broadcast_to(fill, inputs.shape)
        except RuntimeError:
            raise ValueError(f"fill of shape {tuple(fill.shape)} does not broadcast to the input "
                             f"shape {tuple(inputs.shape)}") from None

    def _occluded(self, rows: torch.Tensor, masks: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        """Return ``rows`` occluded by ``masks`` (True inside the window)."""
        if self.occlusion_fn is None:
            return torch.where(masks, fill, rows)
        return self.occlusion_fn(rows, masks.expand_as(rows))

    def forward(self, inputs: Union[torch.Tensor, tuple], target: Target,
                **model_kwargs: Any) -> tuple[torch.Tensor, Relevance]:
        """Return the output and the occlusion relevance (of each float input)."""
        tensors = _as_tuple(inputs)
        with torch.no_grad():
            output = self._scores(tensors, model_kwargs)
            weights = torch.ones_like(output) if target is None else grad_outputs(target, output)
            clean_score = (output * weights).reshape(len(tensors[0]), -1).sum(dim=1)
            relevances = [self._input_relevance(tensors, index, model_kwargs, weights, clean_score)
                          if value.is_floating_point() else None for index, value in enumerate(tensors)]
        return output, _like(inputs, relevances)

    def _input_relevance(self, inputs: tuple, index: int, model_kwargs: dict, weights: torch.Tensor,
                         clean_score: torch.Tensor) -> torch.Tensor:
        """Return the occlusion relevance of ``inputs[index]``, the other inputs held at their values."""
        value = inputs[index]
        masks = self._window_masks(value.shape, value.device)
        fill = self._fill_for(value)
        batch = value.shape[0]
        flat_masks = masks.flatten(1)
        relevance = torch.zeros(batch, flat_masks.shape[1], dtype=value.dtype, device=value.device)
        for rows in _chunks(len(masks) * batch, self.batch_size):
            rows = rows.to(value.device)
            window, sample = rows // batch, rows % batch
            occluded = [self._occluded(value[sample], masks[window], fill[sample]) if position == index else other[sample]
                        for position, other in enumerate(inputs)]
            score = (self._scores(occluded, _sample_rows(model_kwargs, sample, batch)) * weights[sample])
            drop = (clean_score[sample] - score.reshape(len(rows), -1).sum(dim=1)).unsqueeze(1)
            relevance.index_add_(0, sample, drop * flat_masks[window].to(value.dtype))
        coverage = flat_masks.sum(dim=0).to(value.dtype)
        relevance = (relevance / coverage).reshape(batch, *masks.shape[1:])
        return relevance.expand(value.shape).clone()
