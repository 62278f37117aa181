"""Core machinery: hooks that replace a module's gradient by a rule, stabilizers, parameter
modifiers and composites that attach rules to a model for the duration of a context.

A rule is attached to a module with a forward hook. When the module runs with gradients enabled
and an input that requires grad, the hook routes the module's output through an autograd function
whose backward pass returns the rule's relevance for the module's input instead of the plain
gradient. The module's own backward never runs. State lives in that function's context, one per
call, so a module called several times in one forward pass gets correct relevance for every call.
"""
from __future__ import annotations

import copy
import functools
import numbers
import threading
import warnings
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import torch

from lrp_lightning import _arguments

_STATE = threading.local()


def _flag(name: str, default: bool) -> bool:
    return getattr(_STATE, name, default)


@contextmanager
def fast_path(enabled: bool = True) -> Iterator[None]:
    """Enable or disable the closed-form backward of rules in this thread.

    Rules compute Linear and convolution layers in closed form by default; inside
    ``fast_path(False)`` every rule uses its generic autograd formulation instead. Both agree
    numerically; the switch exists for tests and benchmarks.

    Parameters
    ----------
    enabled : bool
        Whether rules may use their closed-form backward.
    """
    previous = _flag("fast_path", True)
    _STATE.fast_path = enabled
    try:
        yield
    finally:
        _STATE.fast_path = previous


def fast_path_enabled() -> bool:
    """Return whether closed-form backward passes are enabled in this thread (never while a
    differentiable relevance is built, see :func:`differentiable`)."""
    return _flag("fast_path", True) and not _flag("differentiable", False)


class differentiable:
    """Context in which this thread's rules build a relevance differentiable with respect to the
    parameters and the input (a class, not a generator: it is entered once per hooked call).

    :class:`_RuleFunction` enters it for a backward pass with ``create_graph=True`` (autograd then
    runs the backward with gradients enabled); inside, rules take their autograd path with the
    graph kept, parameters and inputs undetached, instead of their closed forms. The attributors
    enter it around the forward pass of a call with ``create_graph=True``, so that hooks keep what
    a second backward pass needs.

    Parameters
    ----------
    enabled : bool
        Whether relevance is built differentiably inside the block.
    """

    __slots__ = ("enabled", "previous")

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = bool(enabled)

    def __enter__(self) -> None:
        self.previous = _flag("differentiable", False)
        _STATE.differentiable = self.enabled

    def __exit__(self, *exc_info: Any) -> None:
        _STATE.differentiable = self.previous

    @staticmethod
    def enabled_now() -> bool:
        """Return whether this thread builds a differentiable relevance now."""
        return _flag("differentiable", False)


class _hooks_suspended:
    """Context in which this thread's rules leave module calls alone (a class, not a generator:
    it is entered once per hooked call in the backward pass)."""

    __slots__ = ("previous",)

    def __enter__(self) -> None:
        self.previous = _flag("suspended", False)
        _STATE.suspended = True

    def __exit__(self, *exc_info: Any) -> None:
        _STATE.suspended = self.previous


def _as_name_list(names: Union[None, str, Sequence[str]], argument: str = "zero_params") -> list:
    return _arguments.names(argument, names)


def is_plain_stabilizer(stabilizer: Callable) -> bool:
    """Whether ``stabilizer`` is a :class:`Stabilizer` computing ``d + eps * sign(d)`` with a number ``eps``
    (no clipping, no norm scaling), whose values fast paths may compute in other ways.

    Parameters
    ----------
    stabilizer : callable
        A rule's stabilizer.

    Returns
    -------
    bool
    """
    return (
        type(stabilizer) is Stabilizer
        and not stabilizer.clip
        and not stabilizer.norm_scale
        and isinstance(stabilizer.epsilon, (int, float))
    )


def _mean_dims(dim: Union[None, int, Sequence[int]]) -> Optional[tuple]:
    """The dims of ``norm_scale``'s mean as a tuple (None stays None); an int is one dim.

    Raises
    ------
    TypeError
        If ``dim`` is neither None, an int nor a list/tuple of ints.
    """
    if dim is None:
        return None
    if isinstance(dim, numbers.Integral) and not isinstance(dim, bool):
        return (int(dim),)
    return tuple(_arguments.sequence("dim", dim, _arguments.integer))


def stabilize(
    input: torch.Tensor,
    epsilon: float = 1e-6,
    clip: bool = False,
    norm_scale: bool = False,
    dim: Union[None, int, Sequence[int]] = None,
) -> torch.Tensor:
    """Return ``input`` moved away from zero, for a safe division.

    ``stab(d) = d + epsilon * sign(d)`` with ``sign(0) = +1``; with ``clip=True`` instead
    ``sign(d) * max(|d|, epsilon)``. With ``norm_scale=True`` epsilon is first multiplied by the
    root mean square of ``d`` over ``dim``.

    Parameters
    ----------
    input : torch.Tensor
        The denominator.
    epsilon : float
        Shift (or, with ``clip``, the smallest magnitude).
    clip : bool
        Clip the magnitude to at least ``epsilon`` instead of adding it.
    norm_scale : bool
        Scale ``epsilon`` by ``sqrt(mean(d ** 2))`` over ``dim``.
    dim : int or tuple of int, optional
        Dimensions of the mean for ``norm_scale``; all but the first when None.

    Returns
    -------
    torch.Tensor
        A new tensor.

    Raises
    ------
    TypeError
        If ``dim`` is neither None, an int nor a list/tuple of ints.
    """
    if norm_scale:
        dims = _mean_dims(dim)
        dims = tuple(range(1, input.dim())) if dims is None else dims
        epsilon = epsilon * input.pow(2).mean(dim=dims, keepdim=True).sqrt()
    magnitude = input.abs()
    if not clip:
        magnitude.add_(epsilon)
    elif isinstance(epsilon, torch.Tensor):
        magnitude = torch.maximum(magnitude, epsilon)
    else:
        magnitude.clamp_(min=epsilon)
    # the sign of d with -0 made +0 first, so that sign(0) = +1 (element-wise passes only: a
    # torch.where is several times slower on the CPU, and the values are the same bit for bit)
    return magnitude.copysign_(input.add(0.0))


def expand(tensor: Any, shape: Sequence[int], cut_batch_dim: bool = False) -> torch.Tensor:
    """Expand a scalar or tensor to ``shape``, appending singleton dimensions where it has fewer.

    Parameters
    ----------
    tensor : int, float or torch.Tensor
        The value; a non-tensor becomes a new tensor.
    shape : tuple of int
        Target shape.
    cut_batch_dim : bool
        Keep only the first ``shape[0]`` entries of dimension 0 when ``tensor`` has more.

    Returns
    -------
    torch.Tensor
        ``tensor`` expanded to ``shape``.

    Raises
    ------
    RuntimeError
        If ``tensor`` does not expand to ``shape``.
    """
    if not isinstance(tensor, torch.Tensor):
        tensor = torch.tensor(tensor)
    shape = tuple(shape)
    if tensor.dim() > len(shape):
        raise RuntimeError(f"cannot expand a tensor of shape {tuple(tensor.shape)} to the shape {shape}")
    tensor = tensor.reshape(tuple(tensor.shape) + (1,) * (len(shape) - tensor.dim()))
    if cut_batch_dim and tensor.dim() and tensor.shape[0] > shape[0]:
        tensor = tensor[: shape[0]]
    try:
        return tensor.expand(shape)
    except RuntimeError:
        raise RuntimeError(f"cannot expand a tensor of shape {tuple(tensor.shape)} to the shape {shape}") from None


def zero_wrap(zero_params: Union[str, Sequence[str]]) -> Callable[[Callable], Callable]:
    """Return a decorator making a parameter modifier ``(param, name) -> tensor`` give zeros for ``zero_params``.

    Parameters
    ----------
    zero_params : str or list of str
        Names of the parameters that become zero.

    Returns
    -------
    callable
        Decorator of a modifier function.
    """
    names = _as_name_list(zero_params)

    def decorator(modifier: Callable[[torch.Tensor, str], torch.Tensor]) -> Callable[[torch.Tensor, str], torch.Tensor]:
        def wrapped(param: torch.Tensor, name: str) -> torch.Tensor:
            return torch.zeros_like(param) if name in names else modifier(param, name)

        return wrapped

    return decorator


class Stabilizer:
    """Stabilize a denominator by moving it away from zero, see :func:`stabilize`.

    Parameters
    ----------
    epsilon : float
        Magnitude of the stabilization.
    clip : bool
        Clip the magnitude to at least ``epsilon`` instead of adding it.
    norm_scale : bool
        Scale ``epsilon`` by the mean absolute value of the input.
    dim : int or tuple of int, optional
        Dimensions over which the mean for ``norm_scale`` is taken (all but the first when None).
    """

    def __init__(
        self,
        epsilon: float = 1e-6,
        clip: bool = False,
        norm_scale: bool = False,
        dim: Union[None, int, Sequence[int]] = None,
    ) -> None:
        self.epsilon = _arguments.real_number("epsilon", epsilon, minimum=0.0)
        self.clip = _arguments.boolean("clip", clip)
        self.norm_scale = _arguments.boolean("norm_scale", norm_scale)
        self.dim = _mean_dims(dim)

    def __call__(self, input: torch.Tensor) -> torch.Tensor:
        """Return the stabilized ``input``."""
        return stabilize(input, self.epsilon, self.clip, self.norm_scale, self.dim)

    def __repr__(self) -> str:
        return f"Stabilizer(epsilon={self.epsilon})"

    @classmethod
    def ensure(cls, value: Union[float, Callable[[torch.Tensor], torch.Tensor]], name: str = "stabilizer") -> Callable:
        """Return ``value`` if it is callable, else a :class:`Stabilizer` with ``epsilon=value``.

        Raises
        ------
        TypeError, ValueError
            If ``value`` (the argument ``name``) is neither callable nor a finite number >= 0.
        """
        if callable(value):
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a float or a callable stabilizer, got {type(value).__name__} {value!r}")
        return cls(epsilon=_arguments.real_number(name, value, minimum=0.0))


class ParamMod:
    """A temporary modification of a module's parameters, applied inside a rule's forward maps.

    Parameters
    ----------
    modifier : callable
        ``modifier(param, name) -> tensor``: the modified value of parameter ``name``.
    param_keys : list of str, optional
        Names of the parameters to modify; all direct parameters of the module when None.
    zero_params : str or list of str, optional
        Names of parameters set to zero (after ``modifier`` is skipped for them).
    require_params : bool
        Raise a RuntimeError when a name in ``param_keys`` is not an attribute of the module
        (attributes that are None are skipped).

    Examples
    --------
    >>> with ParamMod(lambda param, name: param.clamp(min=0))(module) as modified:
    ...     positive_output = modified(input)
    """

    def __init__(
        self,
        modifier: Callable[[torch.Tensor, str], torch.Tensor],
        param_keys: Optional[Sequence[str]] = None,
        zero_params: Union[None, str, Sequence[str]] = None,
        require_params: bool = True,
    ) -> None:
        if not callable(modifier):
            raise TypeError(f"modifier must be callable, got {type(modifier).__name__} {modifier!r}")
        self.modifier = modifier
        self.param_keys = None if param_keys is None else _as_name_list(param_keys, "param_keys")
        self.zero_params = _as_name_list(zero_params)
        self.require_params = _arguments.boolean("require_params", require_params)

    def overrides(self, module: torch.nn.Module) -> dict:
        """Return ``{name: modified tensor}`` for the module's parameters (detached, no grad; inside
        :class:`differentiable`, in the parameters' graph).

        Raises
        ------
        RuntimeError
            If ``require_params`` and a name in ``param_keys`` is no attribute of ``module``.
        """
        keys = self.param_keys
        if keys is None:
            keys = [name for name, param in module.named_parameters(recurse=False) if param is not None]
        missing = [name for name in keys if not hasattr(module, name)]
        if missing and self.require_params:
            raise RuntimeError(
                f"module {type(module).__name__} lacks the parameters {missing} named in param_keys; "
                "remove them from param_keys or pass require_params=False"
            )
        overrides = {}
        keep_graph = differentiable.enabled_now()
        for name in keys:
            param = getattr(module, name, None)
            if param is None:
                continue
            if not keep_graph:
                param = param.detach()
            if name in self.zero_params:
                overrides[name] = torch.zeros_like(param)
            else:
                overrides[name] = self.modifier(param, name)
        return overrides

    @contextmanager
    def __call__(self, module: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Modify the parameters of ``module`` for the duration of the block (``with mod(module) as modified:``).

        The original parameter objects are put back unchanged on exit, even when the body raises.

        Raises
        ------
        RuntimeError
            If ``require_params`` and a name in ``param_keys`` is no attribute of ``module``.
        """
        with swapped_parameters(module, self.overrides(module)) as modified:
            yield modified

    @classmethod
    def ensure(cls, value: Union["ParamMod", Callable], name: str = "param_modifiers") -> "ParamMod":
        """Return ``value`` if it is a :class:`ParamMod`, else wrap the callable into one.

        Raises
        ------
        TypeError
            If ``value`` (the argument ``name``) is neither.
        """
        if isinstance(value, cls):
            return value
        if callable(value):
            return cls(value)
        raise TypeError(f"{name} must hold ParamMods or callables, got {type(value).__name__} {value!r}")


@contextmanager
def swapped_parameters(module: torch.nn.Module, overrides: dict) -> Iterator[torch.nn.Module]:
    """Replace parameters of ``module`` by the tensors in ``overrides`` and put the originals back.

    The original parameter objects are never written to: they are taken out of
    ``module._parameters`` and reinserted unchanged on exit, even when the body raises.
    """
    originals = {name: module._parameters[name] for name in overrides}
    try:
        for name, value in overrides.items():
            module._parameters[name] = value
        yield module
    finally:
        module._parameters.update(originals)


class RemovableHandleList(list):
    """A list of handles that are removed together with :meth:`remove`."""

    def remove(self) -> None:
        """Remove every handle, last registered first, and empty the list."""
        for handle in reversed(self):
            handle.remove()
        self.clear()


class RemovableHandle:
    """A handle calling ``instance.remove()`` on :meth:`remove`, holding ``instance`` only weakly.

    Parameters
    ----------
    instance : object
        Anything with a ``remove()`` method (a canonizer, a hook).
    """

    def __init__(self, instance: Any) -> None:
        self.instance = weakref.ref(instance)

    def remove(self) -> None:
        """Call ``remove()`` on the instance if it still exists."""
        instance = self.instance()
        if instance is not None:
            instance.remove()


class Identity(torch.autograd.Function):
    """The identity on any number of tensors, giving them a ``grad_fn`` to attach backward hooks to.

    ``Identity.apply(*tensors)`` returns a tuple of new tensors equal to ``tensors``; the backward
    pass passes the gradients through unchanged.
    """

    @staticmethod
    def forward(ctx: Any, *inputs: torch.Tensor) -> tuple:
        """Return aliases of ``inputs``."""
        return tuple(input.view_as(input) for input in inputs)

    @staticmethod
    def backward(ctx: Any, *grad_outputs: torch.Tensor) -> tuple:
        """Return ``grad_outputs`` unchanged."""
        return grad_outputs


class _CallState:
    """What one hooked call of a module leaves for its backward pass.

    A call with one tensor input that requires grad, the first positional argument, keeps the
    further arguments in ``extra_args``. A call with several such tensors, or with one in another
    place, keeps all positional arguments in ``extra_args`` and the places of the tensors in
    ``slots`` (positional indices, keyword names); :meth:`forward_with` then re-evaluates the module.
    """

    __slots__ = ("hook", "module", "extra_args", "kwargs", "output", "probe", "slots", "parameter_map")

    def __init__(
        self,
        hook: "Hook",
        module: torch.nn.Module,
        extra_args: tuple,
        kwargs: dict,
        output: torch.Tensor,
        probe: Any,
        slots: Optional[list] = None,
    ):
        self.hook = hook
        self.module = module
        self.extra_args = extra_args
        self.kwargs = kwargs
        self.output = output
        self.probe = probe
        self.slots = slots
        # inside `differentiable` (a call with create_graph=True): the parameters that require grad, inputs of the
        # rule's autograd node, so that a derivative of the relevance reaches them along the forward pass
        # (by name: the second pass recomputes the module with these, whatever a canonizer has put back since)
        self.parameter_map = {
            name: parameter for name, parameter in module.named_parameters(recurse=False) if parameter.requires_grad
        } if differentiable.enabled_now() else {}

    def forward_with(self, *inputs: torch.Tensor) -> Any:
        """Return ``module.forward`` of this call with ``inputs`` in the places of its tensor inputs."""
        args, kwargs = list(self.extra_args), dict(self.kwargs)
        for slot, value in zip(self.slots, inputs):
            if isinstance(slot, int):
                args[slot] = value
            else:
                kwargs[slot] = value
        return self.module.forward(*args, **kwargs)


def is_variable(value: Any) -> bool:
    """Whether ``value`` is a tensor argument through which relevance flows: it requires grad and is
    not a parameter.

    Parameters
    ----------
    value : Any
        A module argument.

    Returns
    -------
    bool
    """
    return isinstance(value, torch.Tensor) and value.requires_grad and not isinstance(value, torch.nn.Parameter)


def _store_grad_output(hook: weakref.ref, grad_output: torch.Tensor) -> None:
    """Tensor hook of :meth:`Hook._keep_grad_output`: store ``grad_output`` on the hook, if it still exists."""
    hook = hook()
    if hook is not None:
        hook.stored_tensors["grad_output"] = (grad_output,)


class _RuleFunction(torch.autograd.Function):
    """Identity on the module output whose backward returns the rule's relevance for the input."""

    @staticmethod
    def forward(ctx: Any, state: _CallState, *tensors: torch.Tensor) -> torch.Tensor:
        output = state.output
        ctx.state = state
        keeps_output = state.hook.saves_output_of(state.module)
        ctx.output = output.detach() if keeps_output else None
        ctx.output_version = output._version
        ctx.parameter_count = len(state.parameter_map)
        inputs = tensors[:len(tensors) - ctx.parameter_count]
        ctx.input_count = len(inputs)
        ctx.relevance_done = False
        ctx.differentiable_forward = differentiable.enabled_now()
        if state.hook.saves_input or ctx.differentiable_forward:
            ctx.save_for_backward(*inputs)
        state.output = None
        if keeps_output and state.hook.copies_kept_output and output.device.type == "cpu":
            # the next modules get a copy: an in-place operation there (a ReLU(inplace=True) after a
            # convolution) then leaves the kept output as it was, and the backward pass need not run
            # the layer again (on the CPU a copy costs far less than a convolution; on CUDA, where
            # memory is the scarcer resource, a modified output is recomputed instead)
            return output.clone()
        return output

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple:
        state = ctx.state
        if ctx.relevance_done:
            # a pass differentiating a relevance built with create_graph=True reaches the forward graph:
            # it needs the module's true derivatives (inputs and parameters), not the rule
            return (None, *_true_gradients(state, ctx.saved_tensors, grad_output))
        saved = state.hook.saves_input or ctx.differentiable_forward
        inputs = ctx.saved_tensors if saved else (None,) * ctx.input_count
        output = ctx.output
        # autograd runs a backward pass with create_graph=True with gradients enabled
        keep_graph = torch.is_grad_enabled()
        if output is not None and (output._version != ctx.output_version or keep_graph):
            # modified in place since, or (create_graph=True) needed in the graph: recomputed by the rule
            output = None
        ctx.relevance_done = keep_graph and ctx.differentiable_forward
        unused_parameters = (None,) * ctx.parameter_count
        with differentiable(keep_graph), torch.enable_grad(), _hooks_suspended():
            if state.slots is None:
                return (None, state.hook.relevance(state, inputs[0], output, grad_output), *unused_parameters)
            relevances = tuple(state.hook.propagate_inputs(state.module, inputs, output, grad_output, state.forward_with))
        if len(relevances) != len(inputs):
            raise RuntimeError(
                f"{type(state.hook).__name__}.propagate_inputs returned {len(relevances)} relevances for the "
                f"{len(inputs)} tensor inputs of {type(state.module).__name__}; return one per input"
            )
        return (None, *relevances, *unused_parameters)


def _true_gradients(state: _CallState, inputs: tuple, grad_output: torch.Tensor) -> tuple:
    """The module's plain gradients ``J^T grad_output`` of one call's tensor inputs and of its parameters
    (``state.parameter_map``), recomputed from the saved inputs and those parameters without hooks."""
    forward = state.forward_with if state.slots is not None else (
        lambda input: forward_of(state.module, input, state.extra_args, state.kwargs)
    )
    keep_graph = torch.is_grad_enabled()
    with torch.enable_grad(), _hooks_suspended(), swapped_parameters(state.module, state.parameter_map):
        leaves = [_graph_leaf(input, keep_graph) for input in inputs]
        gradients = torch.autograd.grad(forward(*leaves), [*leaves, *state.parameter_map.values()], grad_output,
                                        allow_unused=True, create_graph=keep_graph)
    return tuple(torch.zeros_like(leaf) if gradient is None else gradient
                 for leaf, gradient in zip(leaves, gradients[:len(leaves)])) + tuple(gradients[len(leaves):])


class Hook:
    """Base class of rules: replaces the gradient of a module by the rule's relevance.

    Two ways to write a rule:

    - zennit's protocol: override :meth:`forward` ``(module, input, output)`` (called after every
      forward of the module, also with the hook inactive or no gradient required; a non-None
      result replaces the output) and/or :meth:`backward` ``(module, grad_input, grad_output)``,
      which receives the module's true gradient ``grad_input = J^T grad_output`` and
      ``grad_output`` as 1-tuples and returns the new input gradient (a tuple or a tensor; None
      keeps ``grad_input``); only :meth:`backward` is gated by ``active``. ``grad_input`` is
      recomputed from the saved input in the backward pass. ``stored_tensors`` is a dict for the
      rule's own use (what :meth:`forward` puts there; ``'grad_output'``, the 1-tuple, from the
      backward pass on, as in zennit), emptied by :meth:`remove`.
    - the engine's protocol: override :meth:`propagate`, which gets the input, the output and the
      module's further arguments of one call directly (no recomputed gradient).

    ``saves_input`` says whether the input is needed (an in-place module then works on a copy, so the
    input survives), ``saves_output`` whether the output is (``None`` is passed when it was modified
    in place since). ``copies_kept_output``: on the CPU, the next modules get a copy of a kept
    output, so that an in-place change there does not force :meth:`propagate` to run the module
    again (worth it where that costs more than the copy, a convolution's; False for cheap
    modules). Composites register a :meth:`copy` per module, so per-module state of a rule is
    never shared between modules.

    The tensor inputs of a call are its arguments, positional or keyword, that require grad and are
    not parameters (see :func:`is_variable`); the other arguments are held fixed. A call whose only
    tensor input is the first positional argument goes to :meth:`propagate` (or the zennit
    protocol); a call with several tensor inputs, or with its tensor input elsewhere (e.g.
    ``layer(input=x)``), goes to :meth:`propagate_inputs`, which returns one relevance per tensor
    input. Rules written for one input (those overriding :meth:`propagate` but not
    :meth:`propagate_inputs`) raise a ``TypeError`` in the forward pass of such a call.
    """

    saves_input: bool = True
    saves_output: bool = False
    copies_kept_output: bool = True

    def __init__(self) -> None:
        self.active = True
        self._inplace_inputs: dict = {}
        self.stored_tensors: dict = {}

    def saves_output_of(self, module: torch.nn.Module) -> bool:
        """Whether the backward pass of a call of ``module`` gets the call's output (default:
        ``saves_output``); a rule may decide per module, e.g. recompute what is cheap to recompute.

        Parameters
        ----------
        module : torch.nn.Module
            The hooked module.

        Returns
        -------
        bool
        """
        return self.saves_output

    def forward(self, module: torch.nn.Module, input: tuple, output: torch.Tensor) -> Optional[torch.Tensor]:
        """Called after the module's forward with its inputs (a tuple) and output; a non-None result replaces the output."""
        return None

    def backward(self, module: torch.nn.Module, grad_input: tuple, grad_output: tuple) -> Union[None, tuple, torch.Tensor]:
        """Return the new gradient of the module's input from its true gradient ``grad_input`` (None: keep it).

        Parameters
        ----------
        module : torch.nn.Module
            The hooked module.
        grad_input : tuple of torch.Tensor
            ``(J^T grad_output,)``, the module's plain gradient of its first input.
        grad_output : tuple of torch.Tensor
            ``(grad_output,)``, the gradient arriving at the module's output.
        """
        return None

    def propagate(
        self,
        module: torch.nn.Module,
        input: Optional[torch.Tensor],
        output: Optional[torch.Tensor],
        grad_output: torch.Tensor,
        args: tuple,
        kwargs: dict,
    ) -> torch.Tensor:
        """Return the relevance (modified gradient) of the module's first input for one call.

        The base implementation is zennit's protocol: the module's true gradient, passed through
        :meth:`backward`.

        Parameters
        ----------
        module : torch.nn.Module
            The hooked module.
        input : torch.Tensor or None
            The module's first input (None unless ``saves_input``).
        output : torch.Tensor or None
            The module's output (None unless ``saves_output`` and unmodified since).
        grad_output : torch.Tensor
            The relevance arriving at the module's output.
        args, kwargs
            The module's further positional and keyword arguments.
        """
        grad_input = module_gradient(module, input, grad_output, args, kwargs)
        self.stored_tensors["grad_output"] = (grad_output,)
        result = self.backward(module, (grad_input,), (grad_output,))
        if result is None:
            return grad_input
        return result[0] if isinstance(result, (tuple, list)) else result

    def propagate_inputs(
        self,
        module: torch.nn.Module,
        inputs: tuple,
        output: Optional[torch.Tensor],
        grad_output: torch.Tensor,
        forward: Callable[..., torch.Tensor],
    ) -> tuple:
        """Return the relevance of each tensor input of one call with several (or keyword) tensor inputs.

        The base implementation is zennit's protocol: the module's true gradients
        ``J_i^T grad_output`` of all inputs, passed through :meth:`backward` as one tuple.

        Parameters
        ----------
        module : torch.nn.Module
            The hooked module.
        inputs : tuple of torch.Tensor
            The call's tensor inputs (positional ones first, in order, then keyword ones), each
            None unless ``saves_input``.
        output : torch.Tensor or None
            The module's output (None unless ``saves_output`` and unmodified since).
        grad_output : torch.Tensor
            The relevance arriving at the module's output.
        forward : callable
            ``forward(*tensors)``: the module's forward with ``tensors`` in the places of ``inputs``
            and the call's other arguments unchanged (parameters as the module holds them, so a
            :class:`ParamMod` applies).

        Returns
        -------
        tuple of torch.Tensor
            One relevance (or None) per input, each of its input's shape.

        Raises
        ------
        TypeError
            If :meth:`backward` returns a single tensor for several inputs.
        """
        grad_input = _input_gradients(inputs, grad_output, forward)
        self.stored_tensors["grad_output"] = (grad_output,)
        result = self.backward(module, grad_input, (grad_output,))
        if result is None:
            return grad_input
        if isinstance(result, torch.Tensor):
            if len(inputs) != 1:
                raise TypeError(
                    f"{type(self).__name__}.backward returned one tensor for the {len(inputs)} tensor inputs of "
                    f"{type(module).__name__}; return a tuple with one gradient per input"
                )
            return (result,)
        return tuple(result)

    def _handles_several_inputs(self) -> bool:
        """Whether the rule defines the relevance of calls with several tensor inputs: it overrides
        :meth:`propagate_inputs`, or follows zennit's protocol (no own :meth:`propagate` or :meth:`relevance`)."""
        cls = type(self)
        if cls.propagate_inputs is not Hook.propagate_inputs:
            return True
        return cls.propagate is Hook.propagate and cls.relevance is Hook.relevance

    def probe(self, input: torch.Tensor) -> Any:
        """Return what the backward pass needs to know about the input, taken in the forward pass (default: nothing)."""
        return None

    def relevance(self, call: _CallState, input: Optional[torch.Tensor], output: Optional[torch.Tensor], grad_output: torch.Tensor) -> torch.Tensor:
        """Dispatch one call's backward pass to :meth:`propagate`."""
        return self.propagate(call.module, input, output, grad_output, call.extra_args, call.kwargs)

    def remove(self) -> None:
        """Drop whatever the hook stored or cached while registered (called when its composite is removed)."""
        self._inplace_inputs = {}
        self.stored_tensors = {}

    def copy(self) -> "Hook":
        """Return an independent copy of this hook (same settings, none of its stored state).

        Unlike zennit's default, which calls ``type(self)()``, the copy keeps constructor
        arguments, so a subclass needs no ``copy`` of its own.
        """
        duplicate = copy.copy(self)
        duplicate.remove()
        return duplicate

    def _pre_hook(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> Optional[tuple]:
        # An in-place module runs on a detached alias of its input, so its own autograd node never
        # enters the graph; rules that need the input get a copy, so the input survives.
        if not getattr(module, "inplace", False) or not self._applies(args):
            return None
        original = args[0]
        working = original.detach()
        if self.saves_input:
            working = working.clone()
        self._inplace_inputs[id(working)] = original
        return (working,) + tuple(args[1:]), kwargs

    def _forward_hook(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> Optional[torch.Tensor]:
        input = self._inplace_inputs.pop(id(args[0]), None) if args else None
        if input is None:
            slots = self._tensor_input_slots(args, kwargs)
            if not slots:
                return self._forward_only(module, args, output)
            if slots != [0]:
                return self._forward_hook_inputs(module, args, kwargs, output, slots)
        if not isinstance(output, torch.Tensor):
            return None
        if input is None:
            input = args[0]
        replaced = self.forward(module, (input,) + tuple(args[1:]), output)
        if replaced is not None:
            output = replaced
        if input is args[0] and not self._replaces_gradient():
            # a hook with a forward side effect only: the module's own gradient flows
            self._keep_grad_output(output)
            return replaced
        # a detached alias is returned (never the input object itself, which autograd would treat as a view)
        state = _CallState(self, module, tuple(args[1:]), kwargs, output.detach(), self.probe(input))
        return _RuleFunction.apply(state, input, *state.parameter_map.values())

    def _keep_grad_output(self, output: torch.Tensor) -> None:
        """For a hook whose backward leaves the module's gradient alone: put the gradient arriving at
        ``output`` into ``stored_tensors['grad_output']`` (a 1-tuple), as zennit's hooks do; the tensor
        hook holds this hook only weakly."""
        if output.requires_grad:
            output.register_hook(functools.partial(_store_grad_output, weakref.ref(self)))

    def _forward_only(self, module: torch.nn.Module, args: tuple, output: Any) -> Optional[torch.Tensor]:
        """A call the rule leaves alone (switched off, gradients disabled, no input requiring grad):
        :meth:`forward` still runs, as in zennit, unless the hook keeps the default one or the call
        is the engine's own recomputation in a backward pass."""
        if type(self).forward is Hook.forward or _flag("suspended", False) or not isinstance(output, torch.Tensor):
            return None
        return self.forward(module, args, output)

    def _forward_hook_inputs(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any, slots: list) -> Optional[torch.Tensor]:
        """The forward hook of a call whose tensor inputs are at ``slots`` (not just the first argument)."""
        if not isinstance(output, torch.Tensor):
            return None
        replaced = self.forward(module, args, output)
        if replaced is not None:
            output = replaced
        if not self._replaces_gradient():
            self._keep_grad_output(output)
            return replaced
        if not self._handles_several_inputs():
            places = ", ".join(f"argument {slot}" if isinstance(slot, int) else f"keyword {slot!r}" for slot in slots)
            raise TypeError(
                f"{type(self).__name__} handles modules with one tensor input, the first argument, but "
                f"{type(module).__name__} was called with tensors requiring grad at {places}; map a rule for several "
                "inputs to this module (e.g. Epsilon or Norm, any BasicHook), map no rule (its plain gradient reaches "
                "every input), or pass the first input positionally and the others detached"
            )
        inputs = [args[slot] if isinstance(slot, int) else kwargs[slot] for slot in slots]
        state = _CallState(self, module, tuple(args), kwargs, output.detach(), None, slots)
        return _RuleFunction.apply(state, *inputs, *state.parameter_map.values())

    def _tensor_input_slots(self, args: tuple, kwargs: dict) -> list:
        """Where the call's tensor inputs are (positional indices, then keyword names); empty when the
        rule is switched off, suspended or gradients are disabled."""
        if not self._switched_on():
            return []
        slots: list = [index for index, value in enumerate(args) if is_variable(value)]
        slots.extend(name for name, value in kwargs.items() if is_variable(value))
        return slots

    def _replaces_gradient(self) -> bool:
        """Whether the hook changes the module's gradient (it overrides a backward method)."""
        cls = type(self)
        return not (cls.propagate is Hook.propagate and cls.backward is Hook.backward and cls.relevance is Hook.relevance)

    def _switched_on(self) -> bool:
        """Whether the rule acts on the calls now: active, not suspended, gradients enabled."""
        return self.active and not _flag("suspended", False) and torch.is_grad_enabled()

    def _applies(self, args: tuple) -> bool:
        return (
            self._switched_on()
            and len(args) > 0
            and isinstance(args[0], torch.Tensor)
            and args[0].requires_grad
        )

    def register(self, module: torch.nn.Module) -> RemovableHandleList:
        """Attach this rule to ``module``; the returned handle list detaches it and, as in zennit, drops
        what the rule stored (:meth:`remove`)."""
        return RemovableHandleList(
            [
                module.register_forward_pre_hook(self._pre_hook, with_kwargs=True),
                module.register_forward_hook(self._forward_hook, with_kwargs=True),
                RemovableHandle(self),
            ]
        )

    def _repr_fields(self) -> dict:
        return {}

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in self._repr_fields().items())
        return f"{type(self).__name__}({fields})"


def module_gradient(
    module: torch.nn.Module, input: torch.Tensor, grad_output: torch.Tensor, args: tuple = (), kwargs: Optional[dict] = None
) -> torch.Tensor:
    """Return the module's plain gradient of its first input, ``J^T grad_output``, recomputed from ``input``.

    Parameters
    ----------
    module : torch.nn.Module
        The module; its forward runs once more, without hooks.
    input : torch.Tensor
        The module's first input.
    grad_output : torch.Tensor
        The gradient at the module's output.
    args, kwargs
        The module's further arguments.
    """
    gradient, = _input_gradients((input,), grad_output, lambda leaf: forward_of(module, leaf, args, kwargs))
    return gradient


def forward_of(module: torch.nn.Module, input: torch.Tensor, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
    """Return ``module.forward(input, *args, **kwargs)`` (its hooks do not run); an in-place module
    works on a copy, so that ``input`` is never overwritten.

    Parameters
    ----------
    module : torch.nn.Module
        The module.
    input : torch.Tensor
        Its first input.
    args, kwargs
        Its further arguments.
    """
    return module.forward(input.clone() if getattr(module, "inplace", False) else input, *args, **(kwargs or {}))


def _input_gradients(inputs: Sequence[torch.Tensor], grad_output: torch.Tensor, forward: Callable[..., torch.Tensor]) -> tuple:
    """The plain gradients ``J_i^T grad_output`` of ``forward(*inputs)`` (zeros where unused), recomputed without
    hooks; inside :class:`differentiable`, in the graph of the inputs, the parameters and ``grad_output``."""
    keep_graph = differentiable.enabled_now()
    with torch.enable_grad(), _hooks_suspended():
        leaves = [_graph_leaf(input, keep_graph) for input in inputs]
        gradients = torch.autograd.grad(forward(*leaves), leaves, grad_output, allow_unused=True, create_graph=keep_graph)
    return tuple(torch.zeros_like(leaf) if gradient is None else gradient for leaf, gradient in zip(leaves, gradients))


def _graph_leaf(input: torch.Tensor, keep_graph: bool) -> torch.Tensor:
    """A tensor to differentiate with respect to: a detached leaf, or (``keep_graph``) a fresh node in
    the graph of ``input`` (a view, so that gradients reaching it are told apart from other uses of ``input``)."""
    if keep_graph and input.requires_grad:
        return input.view_as(input)
    return input.detach().requires_grad_(True)


def _identity(value: Any) -> Any:
    return value


class BasicHook(Hook):
    """The general form of rules for layers with parameters, computed with autograd.

    For every ``k`` the modified forward map ``z_k = out_k(f(in_k(x); params_k))`` is evaluated,
    where ``f`` is the module's forward with its parameters replaced by ``params_k(module)``.
    Then ``g_k = (d z_k / d in_k(x))^T m_k`` with ``m = gradient_mapper(R, [z_1, ...])`` and the
    relevance of the input is ``reducer([in_1(x), ...], [g_1, ...])``.

    Parameters
    ----------
    input_modifiers : list of callable
        ``input -> modified input``, one per forward map.
    param_modifiers : list of ParamMod or callable
        Parameter modifications, one per forward map.
    output_modifiers : list of callable
        ``output -> modified output``, one per forward map.
    gradient_mapper : callable
        ``(grad_output, outputs) -> list of grad_outputs``, one per forward map.
    reducer : callable
        ``(inputs, gradients) -> relevance of the input``.
    stabilizer : float or callable
        Stabilizer of the default gradient mapper ``[R / stab(z_k) for each k]`` (zennit 0.5.1
        accepts this argument but its default mapper always uses 1e-6).
    """

    def __init__(
        self,
        input_modifiers: Optional[Sequence[Callable]] = None,
        param_modifiers: Optional[Sequence[Union[ParamMod, Callable]]] = None,
        output_modifiers: Optional[Sequence[Callable]] = None,
        gradient_mapper: Optional[Callable] = None,
        reducer: Optional[Callable] = None,
        stabilizer: Union[float, Callable[[torch.Tensor], torch.Tensor]] = 1e-6,
    ) -> None:
        super().__init__()
        callables = _arguments.instance_of_callable
        input_modifiers = _arguments.sequence("input_modifiers", input_modifiers, callables)
        param_modifiers = _arguments.sequence(
            "param_modifiers", param_modifiers, lambda name, modifier: ParamMod.ensure(modifier, name)
        )
        output_modifiers = _arguments.sequence("output_modifiers", output_modifiers, callables)
        _arguments.optional_callable("gradient_mapper", gradient_mapper)
        _arguments.optional_callable("reducer", reducer)
        self.stabilizer = Stabilizer.ensure(stabilizer)
        count = max(len(mods) for mods in (input_modifiers or [0], param_modifiers or [0], output_modifiers or [0]))
        self.input_modifiers = list(input_modifiers or [_identity] * count)
        self.param_modifiers = [ParamMod.ensure(mod) for mod in (param_modifiers or [_identity_param] * count)]
        self.output_modifiers = list(output_modifiers or [_identity] * count)
        if not len(self.input_modifiers) == len(self.param_modifiers) == len(self.output_modifiers):
            raise ValueError("input_modifiers, param_modifiers and output_modifiers must have equal lengths")
        self.gradient_mapper = gradient_mapper or (
            lambda grad_output, outputs: [grad_output / self.stabilizer(output) for output in outputs]
        )
        self.reducer = reducer or (lambda inputs, gradients: sum(i * g for i, g in zip(inputs, gradients)))

    def propagate(self, module, input, output, grad_output, args, kwargs):
        """Return the relevance of the input from the modified forward maps, via autograd."""
        relevance, = self.propagate_inputs(
            module, (input,), output, grad_output, lambda modified: module.forward(modified, *args, **kwargs)
        )
        return relevance

    def propagate_inputs(self, module, inputs, output, grad_output, forward):
        """Return the relevance of each input from the modified forward maps, via autograd.

        Each forward map modifies every input alike, ``z_k = out_k(f(in_k(x_1), ..., in_k(x_n); params_k))``;
        ``g_ki = (d z_k / d in_k(x_i))^T m_k`` and ``R_i = reducer([in_1(x_i), ...], [g_1i, ...])``.
        For a parameter-free sum ``z = sum_j x_j`` the Epsilon and Norm rules thus give
        ``R_i = x_i * R / stab(z)``.
        """
        count = len(inputs)
        keep_graph = differentiable.enabled_now()
        modified = [[_graph_leaf(modifier(input), keep_graph) for input in inputs] for modifier in self.input_modifiers]
        outputs = []
        for map_inputs, param_mod, output_modifier in zip(modified, self.param_modifiers, self.output_modifiers):
            with param_mod(module):
                outputs.append(output_modifier(forward(*map_inputs)))
        grad_outputs = self.gradient_mapper(grad_output, outputs)
        leaves = [leaf for map_inputs in modified for leaf in map_inputs]
        gradients = torch.autograd.grad(outputs, leaves, grad_outputs=grad_outputs, allow_unused=True, create_graph=keep_graph)
        gradients = [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, gradients)]
        return tuple(
            self.reducer([map_inputs[index] for map_inputs in modified], gradients[index::count]) for index in range(count)
        )


def _identity_param(param: torch.Tensor, name: str) -> torch.Tensor:
    return param


def collect_leaves(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Yield the leaf modules of ``module`` in registration order (``module`` itself if it has no children)."""
    children = list(module.children())
    if not children:
        yield module
        return
    for child in children:
        yield from collect_leaves(child)


def uncovered_modules(module: torch.nn.Module, covered: set) -> list:
    """Return the names of leaf modules that own parameters and are not in ``covered``."""
    return [
        name
        for name, child in module.named_modules()
        if not list(child.children())
        and any(True for _ in child.parameters(recurse=False))
        and name not in covered
    ]


ModuleMap = Callable[[dict, str, torch.nn.Module], Optional[Hook]]


def _canonizer(name: str, value: Any) -> Any:
    """An item check for a composite's ``canonizers``: ``value`` must be a canonizer.

    A canonizer is what :class:`Composite` uses of one — an ``apply(module)`` returning the applied
    instances and a ``remove()`` — so the check needs no import of :mod:`lrp_lightning.canonizers`
    (which imports this module). ``torch.nn.Module`` has an ``apply`` but no ``remove``.

    Raises
    ------
    TypeError
        If ``value`` lacks either method.
    """
    if not (callable(getattr(value, "apply", None)) and callable(getattr(value, "remove", None))):
        raise TypeError(f"{name} must be a Canonizer, got {type(value).__name__} {value!r}")
    return value


class Composite:
    """A mapping from a model's modules to rules, applied together with canonizers.

    ``register`` applies the canonizers, then attaches ``module_map(ctx, name, module)``'s hook to
    every module for which it returns one; ``remove`` detaches the hooks, then undoes the canonizers.

    Parameters
    ----------
    module_map : callable, optional
        ``(ctx, name, module) -> Hook or None``; defaults to the subclass's ``mapping``.
    canonizers : list of Canonizer, optional
        Canonizers applied before the rules are attached.

    Attributes
    ----------
    rule_map : dict of str to Hook
        After ``register``: the rule attached to each named module.
    uncovered : list of str
        After ``register``: leaf modules with parameters that no rule covers (their plain gradient flows).
    gradient_view : bool
        Class attribute. False: the rules' backward pass carries relevance, and the gradient
        arriving at the input is the relevance. True: it carries a modified gradient ``g`` and the
        relevance of an input ``x`` is ``x * g`` (``x * x.grad``); the attributors multiply.
    rule_free_types : tuple of type
        Class attribute: leaf modules of these types are not reported as uncovered (e.g. embedding
        lookups, where the gradient view reads the relevance of token inputs).
    """

    warn_uncovered: bool = True
    gradient_view: bool = False
    rule_free_types: tuple = ()

    def __init__(self, module_map: Optional[ModuleMap] = None, canonizers: Optional[list] = None) -> None:
        if module_map is None:
            module_map = getattr(self, "mapping", None)
        self.module_map = _arguments.optional_callable("module_map", module_map)
        self.canonizers = _arguments.sequence("canonizers", canonizers, _canonizer)
        self.handles = RemovableHandleList()
        self.canonizer_instances: list = []
        self.rule_map: dict = {}
        self.hook_refs: weakref.WeakSet = weakref.WeakSet()
        self.uncovered: list = []

    def register(self, module: torch.nn.Module) -> None:
        """Apply the canonizers to ``module`` and attach a copy of its rule to each submodule.

        Every module is offered to ``module_map`` in ``module.named_modules()`` order; the hook it
        returns is a template, of which the module gets its own :meth:`Hook.copy`.

        Raises
        ------
        RuntimeError
            If the composite is registered already (zennit instead removes the earlier registration).
        """
        if self.handles or self.canonizer_instances:
            raise RuntimeError("this composite is already registered; call remove() first")
        try:
            for canonizer in self.canonizers:
                self.canonizer_instances.extend(canonizer.apply(module))
            ctx: dict = {}
            for name, child in module.named_modules():
                template = self.module_map(ctx, name, child) if self.module_map is not None else None
                if template is not None:
                    hook = template.copy()
                    self.handles.append(hook.register(child))
                    self.rule_map[name] = hook
                    self.hook_refs.add(hook)
        except BaseException:
            self.remove()
            raise
        modules = dict(module.named_modules())
        self.uncovered = [
            name for name in uncovered_modules(module, set(self.rule_map)) if not isinstance(modules[name], self.rule_free_types)
        ]
        if self.uncovered and self.warn_uncovered and self.module_map is not None:
            warnings.warn(
                f"no rule covers these layers, their plain gradient is used: {', '.join(self.uncovered)}. "
                "Add them to the composite's layer_map or name_map.",
                stacklevel=2,
            )

    def remove(self) -> None:
        """Detach all rules, then undo all canonizers (last applied first)."""
        self.handles.remove()
        for hook in self.rule_map.values():
            hook.remove()
        for instance in reversed(self.canonizer_instances):
            instance.remove()
        self.canonizer_instances = []
        self.rule_map = {}
        self.hook_refs = weakref.WeakSet()

    def context(self, module: torch.nn.Module) -> "CompositeContext":
        """Return a context manager registering this composite on ``module``; always removed on exit.

        ``with composite.context(model) as modified:`` yields ``model`` with the rules attached.
        """
        return CompositeContext(module, self)

    @contextmanager
    def inactive(self) -> Iterator[None]:
        """Temporarily switch off the registered rules (plain gradients flow)."""
        hooks = list(self.hook_refs)
        states = [hook.active for hook in hooks]
        try:
            for hook in hooks:
                hook.active = False
            yield
        finally:
            for hook, state in zip(hooks, states):
                hook.active = state


class CompositeContext:
    """Registers ``composite`` on ``module`` on entering and removes it on exit, even when the body raises.

    Parameters
    ----------
    module : torch.nn.Module
        The model.
    composite : Composite
        The composite to register.
    """

    def __init__(self, module: torch.nn.Module, composite: Composite) -> None:
        self.module = module
        self.composite = composite

    def __enter__(self) -> torch.nn.Module:
        self.composite.register(self.module)
        return self.module

    def __exit__(self, *exc_info: Any) -> bool:
        self.composite.remove()
        return False
