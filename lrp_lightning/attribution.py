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

:class:`Gradient` also explains token inputs: integer token ids ``(N, T)`` (model keyword arguments
such as ``attention_mask=`` are passed through) give relevance ``(N, T)``, per token the sum over the
hidden dimension of its input-embedding output times its (modified) gradient (see
:mod:`lrp_lightning.tokens`)::

    with Gradient(model, AttnLRP()) as attributor:
        output, relevance = attributor(input_ids, target, attention_mask=attention_mask)

Every attributor leaves what the user owns as it was: parameters, buffers (also when a forward in
training mode would update BatchNorm statistics), ``training`` and ``requires_grad`` flags, ``.grad``
of the parameters, hooks, and the global random state (torch CPU/CUDA, numpy, :mod:`random`).
Randomness (SmoothGrad noise) comes only from a :class:`torch.Generator` seeded per call.
SmoothGrad, IntegratedGradients and Occlusion push all their model evaluations through the model in
large chunks of at most ``batch_size`` samples.
"""
from __future__ import annotations

import contextlib
import numbers
import random
from typing import Any, Callable, Iterator, Optional, Sequence, Type, TypeVar, Union

import numpy as np
import torch

from lrp_lightning import _arguments
from lrp_lightning.tokens import Position, captured_embedding, explained_logits, is_token_input, logits_of

Target = Union[None, int, torch.Tensor, Callable[[torch.Tensor], Any]]
Baseline = Union[None, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]
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


@contextlib.contextmanager
def preserved_random_state(device: Optional[torch.device] = None) -> Iterator[None]:
    """Restore the global random state (torch CPU and CUDA, numpy, random) on exit.

    Parameters
    ----------
    device : torch.device, optional
        Device whose CUDA generator is saved too, if it is a CUDA device; when None, the
        generators of all initialized CUDA devices are.

    Yields
    ------
    None
    """
    cuda_devices = []
    if device is None and torch.cuda.is_initialized():
        cuda_devices = list(range(torch.cuda.device_count()))
    elif device is not None and device.type == "cuda":
        cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=cuda_devices, device_type="cuda"):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


@contextlib.contextmanager
def _preserved_buffers(model: Any) -> Iterator[None]:
    """Copy a module's buffer values back on exit (a training-mode forward may update them)."""
    if not isinstance(model, torch.nn.Module):
        yield
        return
    saved = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


@contextlib.contextmanager
def _frozen_parameters(model: Any) -> Iterator[None]:
    """Turn off ``requires_grad`` of a module's parameters for the duration, and back on exit.

    An attribution without ``create_graph`` needs gradients with respect to the input only; with
    the parameters frozen, autograd keeps no tensor that only a parameter gradient would need (a
    linear layer's input, for one), which lowers the peak memory of the pass.
    """
    if not isinstance(model, torch.nn.Module):
        yield
        return
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    try:
        for parameter in trainable:
            parameter.requires_grad_(False)
        yield
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)


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

    def _scores(self, inputs: torch.Tensor) -> torch.Tensor:
        """The model's scores for ``inputs``: its output, or the output's ``logits``."""
        return logits_of(self.model(inputs))

    def __enter__(self) -> "Attributor":
        if self._stack is not None:
            raise RuntimeError(f"{type(self).__name__} is already entered")
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(_preserved_buffers(self.model))
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

    def __call__(self, inputs: torch.Tensor, attr_output: Target = None,
                 **model_kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Explain ``inputs``.

        Parameters
        ----------
        inputs : torch.Tensor
            Input batch ``(N, ...)``; for :class:`Gradient` also token ids ``(N, T)``.
        attr_output : None, int, torch.Tensor or callable, optional
            What to explain, see :func:`grad_outputs`; ``None``: the attributor's ``attr_output``
            (if that is None too, the output itself).
        **model_kwargs
            Only :class:`Gradient`: keyword arguments passed to the model (e.g. ``attention_mask``)
            and, for token inputs, ``position`` (see :meth:`Gradient.explain_tokens`).

        Returns
        -------
        output : torch.Tensor
            The model output (its ``logits`` for a ``ModelOutput``; for token inputs the explained
            logits, see :meth:`Gradient.explain_tokens`), detached.
        relevance : torch.Tensor
            The attribution, with the shape of ``inputs`` (attached to its graph with
            ``create_graph=True``).

        Raises
        ------
        TypeError
            If ``model_kwargs`` or token ids are given to an attributor other than :class:`Gradient`,
            or ``position`` with float inputs.
        """
        if (model_kwargs or is_token_input(inputs)) and not isinstance(self, Gradient):
            raise TypeError(
                f"{type(self).__name__} takes float inputs and no model keyword arguments; "
                "explain token ids or pass model keyword arguments with Gradient"
            )
        if "position" in model_kwargs and not is_token_input(inputs):
            raise TypeError("position= selects the explained position for token-id inputs; float inputs take none")
        target = self.attr_output if attr_output is None else attr_output
        entered_here = self._stack is None
        with contextlib.ExitStack() as stack:
            if entered_here:
                stack.enter_context(self)
            stack.enter_context(preserved_random_state(inputs.device))
            if not self.create_graph:
                stack.enter_context(_frozen_parameters(self.model))
            stack.enter_context(torch.inference_mode(False))
            stack.enter_context(torch.enable_grad())
            inputs = inputs.detach().clone()
            if is_token_input(inputs):
                output, relevance = self.explain_tokens(inputs, target, **model_kwargs)
            elif model_kwargs:
                output, relevance = self._gradient(inputs, target, model_kwargs)
            else:
                output, relevance = self.forward(inputs, target)
        return output.detach(), relevance if self.create_graph else relevance.detach()

    def forward(self, inputs: torch.Tensor, target: Target) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute output and relevance; called by :meth:`__call__` with gradients enabled.

        Parameters
        ----------
        inputs : torch.Tensor
            A detached copy of the input batch.
        target : None, int, torch.Tensor or callable
            What to explain.

        Returns
        -------
        output, relevance : torch.Tensor
            Model output and attribution.
        """
        raise NotImplementedError

    def _gradient(self, inputs: torch.Tensor, target: Target, model_kwargs: Optional[dict] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the model output and the (composite-modified) gradient of the target output; in the
        gradient view, the input times that gradient."""
        inputs = inputs.detach().requires_grad_(True)
        output = logits_of(self.model(inputs, **(model_kwargs or {})))
        gradient, = torch.autograd.grad(output, inputs, grad_outputs(target, output),
                                        create_graph=self.create_graph, retain_graph=self.retain_graph)
        if self._gradient_view():
            gradient = inputs.detach() * gradient
        return output.detach(), gradient


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

    def forward(self, inputs: torch.Tensor, target: Target) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the output and the gradient of the target output, see :meth:`Attributor.forward`."""
        return self._gradient(inputs, target)

    def explain_tokens(
        self, tokens: torch.Tensor, target: Target = None, position: Position = None, **model_kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Explain token ids ``(N, T)``; called by :meth:`__call__` for integer inputs.

        The output of the model's input embedding (see :func:`lrp_lightning.tokens.input_embedding`)
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
            :func:`lrp_lightning.tokens.explained_logits`.
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

    def _perturbed(self, inputs: torch.Tensor, iteration: torch.Tensor, sample: torch.Tensor,
                   context: Any) -> torch.Tensor:
        """Return the perturbed rows for the given (iteration, sample) index pairs."""
        raise NotImplementedError

    def _mean_gradient(self, inputs: torch.Tensor, target: Target,
                       context: Any, times_input: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the clean output and the gradient averaged over all perturbed copies (with
        ``times_input``, the perturbed copy times its gradient)."""
        output = self._scores(inputs).detach()
        weights = grad_outputs(target, output)
        total = torch.zeros_like(inputs)
        batch = inputs.shape[0]
        for rows in _chunks(self.n_iter * batch, self.batch_size):
            rows = rows.to(inputs.device)
            sample = rows % batch
            perturbed = self._perturbed(inputs, rows // batch, sample, context).requires_grad_(True)
            gradient, = torch.autograd.grad(self._scores(perturbed), perturbed, weights[sample],
                                            create_graph=self.create_graph, retain_graph=self.retain_graph)
            if times_input:
                gradient = perturbed.detach() * gradient
            total.index_add_(0, sample, gradient)
        return output, total / self.n_iter


@register_attributor("smoothgrad")
class SmoothGrad(_PathAttributor):
    """SmoothGrad (Smilkov et al., 2017): the gradient averaged over noisy copies of the input.

    With a gradient-view composite (``composite.gradient_view``), the average of each noisy copy
    times its modified gradient (its relevance).

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

    def forward(self, inputs: torch.Tensor, target: Target) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the output and the mean gradient over noisy inputs."""
        generator = torch.Generator(device=inputs.device)
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        flat = inputs.detach().reshape(inputs.shape[0], -1)
        value_range = flat.amax(dim=1) - flat.amin(dim=1)
        std = (self.noise_level * value_range).reshape(-1, *([1] * (inputs.ndim - 1)))
        return self._mean_gradient(inputs, target, (generator, std), times_input=self._gradient_view())

    def _perturbed(self, inputs: torch.Tensor, iteration: torch.Tensor, sample: torch.Tensor,
                   context: tuple[torch.Generator, torch.Tensor]) -> torch.Tensor:
        generator, std = context
        rows = inputs[sample]
        noise = torch.randn(rows.shape, generator=generator, device=rows.device, dtype=rows.dtype)
        return rows + noise * std[sample]


@register_attributor("integrated_gradients")
class IntegratedGradients(_PathAttributor):
    """Integrated Gradients (Sundararajan et al., 2017) with a right Riemann sum.

    The relevance is ``(x - b) * mean_k grad f(b + k/n_iter * (x - b))`` for ``k = 1..n_iter``;
    it sums to ``f(x) - f(b)`` in the limit (completeness). With a composite the gradients are the
    composite's modified gradients (for a gradient-view composite: the same formula).

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
        zennit's baseline argument: ``inputs -> baseline tensor``; zeros when None.
    n_iter : int, optional
        Number of points on the straight path from the baseline to the input.
    baseline : torch.Tensor or callable, optional
        Alternative to ``baseline_fn``: a tensor broadcastable to the input, or a callable
        ``inputs -> tensor``.
    batch_size : int, optional
        Most samples per forward pass.

    Raises
    ------
    ValueError
        If both ``baseline_fn`` and ``baseline`` are given.
    """

    def __init__(self, model: torch.nn.Module, composite: Optional[Any] = None, attr_output: Target = None,
                 create_graph: bool = False, retain_graph: Optional[bool] = None,
                 baseline_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, n_iter: int = 20,
                 baseline: Baseline = None, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        super().__init__(model, composite, attr_output, create_graph, retain_graph, n_iter, batch_size)
        if baseline_fn is not None and baseline is not None:
            raise ValueError("give either baseline_fn (zennit's name) or baseline, not both")
        _arguments.optional_callable("baseline_fn", baseline_fn)
        if baseline is not None and not callable(baseline):
            baseline = _arguments.tensor_like("baseline", baseline)
        self.baseline = baseline_fn if baseline is None else baseline

    def _baseline_for(self, inputs: torch.Tensor) -> torch.Tensor:
        """Return the baseline broadcast to the shape of ``inputs``."""
        if self.baseline is None:
            return torch.zeros_like(inputs)
        baseline = self.baseline(inputs) if callable(self.baseline) else self.baseline
        try:
            return torch.broadcast_to(baseline.to(inputs).detach(), inputs.shape)
        except RuntimeError:
            raise ValueError(f"baseline of shape {tuple(baseline.shape)} does not broadcast to the "
                             f"input shape {tuple(inputs.shape)}") from None

    def forward(self, inputs: torch.Tensor, target: Target) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the output and the integrated gradients."""
        baseline = self._baseline_for(inputs)
        output, mean_gradient = self._mean_gradient(inputs, target, baseline)
        return output, (inputs - baseline) * mean_gradient

    def _perturbed(self, inputs: torch.Tensor, iteration: torch.Tensor, sample: torch.Tensor,
                   context: torch.Tensor) -> torch.Tensor:
        baseline = context[sample]
        alpha = ((iteration + 1).to(inputs.dtype) / self.n_iter).reshape(-1, *([1] * (inputs.ndim - 1)))
        return baseline + alpha * (inputs[sample] - baseline)


def _window_spec(name: str, value: Any) -> WindowSpec:
    """An int >= 1 or a non-empty list/tuple of them (TypeError for any other type, as zennit)."""
    try:
        if isinstance(value, (list, tuple)) and value:
            return type(value)(_arguments.sequence(name, value, lambda item, v: _arguments.integer(item, v, minimum=1)))
        return _arguments.integer(name, value, minimum=1)
    except TypeError:
        raise TypeError(f"Occlusion {name} must be an int or a tuple of ints, got {value!r}") from None


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
        covered whole). An int applies to every dim after the channel dim ``1`` for inputs with
        three or more dims (``(N, C, H, W)``: ``window x window`` patches over all channels) and to
        dim 1 of ``(N, D)`` inputs. Clipped to the dim's length.
    stride : int or sequence of int, optional
        Step between windows, given like ``window``.
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
        if isinstance(self.window, int):
            count = len(sample_shape) - 1 if len(sample_shape) > 1 else 1
        else:
            count = len(self.window)
        windows = [self.window] * count if isinstance(self.window, int) else list(self.window)
        strides = [self.stride] * count if isinstance(self.stride, int) else list(self.stride)
        if not 1 <= count <= len(sample_shape) or len(strides) != count:
            raise ValueError(f"window {self.window!r} / stride {self.stride!r} do not fit input "
                             f"shape {tuple(shape)}")
        if min(windows) < 1 or min(strides) < 1:
            raise ValueError(f"window and stride must be positive, got {self.window!r}, {self.stride!r}")
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

    def forward(self, inputs: torch.Tensor, target: Target) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the output and the occlusion relevance."""
        with torch.no_grad():
            output = self._scores(inputs)
            weights = torch.ones_like(output) if target is None else grad_outputs(target, output)
            clean_score = (output * weights).reshape(len(inputs), -1).sum(dim=1)
            masks = self._window_masks(inputs.shape, inputs.device)
            fill = self._fill_for(inputs)
            batch = inputs.shape[0]
            flat_masks = masks.flatten(1)
            relevance = torch.zeros(batch, flat_masks.shape[1], dtype=inputs.dtype, device=inputs.device)
            for rows in _chunks(len(masks) * batch, self.batch_size):
                rows = rows.to(inputs.device)
                window, sample = rows // batch, rows % batch
                occluded = self._occluded(inputs[sample], masks[window], fill[sample])
                score = (self._scores(occluded) * weights[sample]).reshape(len(rows), -1).sum(dim=1)
                drop = (clean_score[sample] - score).unsqueeze(1)
                relevance.index_add_(0, sample, drop * flat_masks[window].to(inputs.dtype))
            coverage = flat_masks.sum(dim=0).to(inputs.dtype)
            relevance = (relevance / coverage).reshape(batch, *masks.shape[1:])
        return output, relevance.expand(inputs.shape).clone()
