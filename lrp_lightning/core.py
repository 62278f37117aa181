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
import threading
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import torch

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
    """Return whether closed-form backward passes are enabled in this thread."""
    return _flag("fast_path", True)


@contextmanager
def _hooks_suspended() -> Iterator[None]:
    previous = _flag("suspended", False)
    _STATE.suspended = True
    try:
        yield
    finally:
        _STATE.suspended = previous


class Stabilizer:
    """Stabilize a denominator by moving it away from zero.

    ``stab(d) = d + epsilon * sign(d)`` with ``sign(0) = +1``. With ``clip=True`` the result is
    instead ``sign(d) * max(|d|, epsilon)``. With ``norm_scale=True`` epsilon is scaled by the mean
    absolute value of ``d`` over ``dim`` (all dimensions but the first when ``dim`` is None).

    Parameters
    ----------
    epsilon : float
        Magnitude of the stabilization.
    clip : bool
        Clip the magnitude to at least ``epsilon`` instead of adding it.
    norm_scale : bool
        Scale ``epsilon`` by the mean absolute value of the input.
    dim : tuple of int, optional
        Dimensions over which the mean for ``norm_scale`` is taken.
    """

    def __init__(
        self,
        epsilon: float = 1e-6,
        clip: bool = False,
        norm_scale: bool = False,
        dim: Optional[Sequence[int]] = None,
    ) -> None:
        self.epsilon = epsilon
        self.clip = clip
        self.norm_scale = norm_scale
        self.dim = dim

    def __call__(self, input: torch.Tensor) -> torch.Tensor:
        """Return the stabilized ``input``."""
        epsilon = self.epsilon
        if self.norm_scale:
            dim = tuple(range(1, input.dim())) if self.dim is None else tuple(self.dim)
            epsilon = epsilon * input.abs().mean(dim=dim, keepdim=True)
        if self.clip:
            magnitude = input.abs().clamp_(min=epsilon) if not isinstance(epsilon, torch.Tensor) else torch.maximum(input.abs(), epsilon)
            return torch.where(input >= 0, magnitude, -magnitude)
        if isinstance(epsilon, torch.Tensor):
            return torch.where(input >= 0, input + epsilon, input - epsilon)
        # a fill on the input's device, not a copy from the host, which would make a CUDA stream wait
        positive = input.new_full((), epsilon)
        return torch.where(input >= 0, positive, -positive).add_(input)

    def __repr__(self) -> str:
        return f"Stabilizer(epsilon={self.epsilon})"

    @classmethod
    def ensure(cls, value: Union[float, Callable[[torch.Tensor], torch.Tensor]]) -> Callable:
        """Return ``value`` if it is callable, else a :class:`Stabilizer` with ``epsilon=value``."""
        if callable(value):
            return value
        if isinstance(value, (int, float)):
            return cls(epsilon=float(value))
        raise TypeError(f"a stabilizer must be a float or a callable, got {type(value).__name__}")


def _as_name_list(names: Union[None, str, Sequence[str]]) -> list:
    if names is None:
        return []
    if isinstance(names, str):
        return [names]
    return list(names)


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
        Raise when a name in ``param_keys`` is not a parameter of the module.
    """

    def __init__(
        self,
        modifier: Callable[[torch.Tensor, str], torch.Tensor],
        param_keys: Optional[Sequence[str]] = None,
        zero_params: Union[None, str, Sequence[str]] = None,
        require_params: bool = True,
    ) -> None:
        self.modifier = modifier
        self.param_keys = param_keys
        self.zero_params = _as_name_list(zero_params)
        self.require_params = require_params

    def __call__(self, module: torch.nn.Module) -> dict:
        """Return ``{name: modified tensor}`` for the module's parameters (detached, no grad)."""
        keys = self.param_keys
        if keys is None:
            keys = [name for name, param in module.named_parameters(recurse=False) if param is not None]
        overrides = {}
        for name in keys:
            param = getattr(module, name, None)
            if param is None:
                if self.require_params and name not in module._parameters:
                    raise AttributeError(f"module {type(module).__name__} has no parameter {name!r}")
                continue
            param = param.detach()
            if name in self.zero_params:
                overrides[name] = torch.zeros_like(param)
            else:
                overrides[name] = self.modifier(param, name)
        return overrides

    @classmethod
    def ensure(cls, value: Union["ParamMod", Callable]) -> "ParamMod":
        """Return ``value`` if it is a :class:`ParamMod`, else wrap the callable into one."""
        if isinstance(value, cls):
            return value
        if callable(value):
            return cls(value)
        raise TypeError(f"expected a ParamMod or a callable, got {type(value).__name__}")


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


class _CallState:
    """What one hooked call of a module leaves for its backward pass."""

    __slots__ = ("hook", "module", "extra_args", "kwargs", "output", "probe")

    def __init__(
        self, hook: "Hook", module: torch.nn.Module, extra_args: tuple, kwargs: dict, output: torch.Tensor, probe: Any
    ):
        self.hook = hook
        self.module = module
        self.extra_args = extra_args
        self.kwargs = kwargs
        self.output = output
        self.probe = probe


class _RuleFunction(torch.autograd.Function):
    """Identity on the module output whose backward returns the rule's relevance for the input."""

    @staticmethod
    def forward(ctx: Any, state: _CallState, input: torch.Tensor) -> torch.Tensor:
        output = state.output
        ctx.state = state
        ctx.output = output.detach() if state.hook.saves_output else None
        ctx.output_version = output._version
        if state.hook.saves_input:
            ctx.save_for_backward(input)
        state.output = None
        return output

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple:
        state = ctx.state
        input = ctx.saved_tensors[0] if state.hook.saves_input else None
        output = ctx.output
        if output is not None and output._version != ctx.output_version:
            output = None
        with torch.enable_grad(), _hooks_suspended():
            grad_input = state.hook.relevance(state, input, output, grad_output)
        return None, grad_input


class Hook:
    """Base class of rules: replaces the gradient of a module by ``backward``'s result.

    Subclasses implement :meth:`backward`. ``saves_input`` says whether it needs the module's
    input (an in-place module then works on a copy, so the input survives), ``saves_output``
    whether it uses the module's output (``None`` is passed when it was modified in place since).
    """

    saves_input: bool = True
    saves_output: bool = False

    def __init__(self) -> None:
        self.active = True
        self._inplace_inputs: dict = {}

    def backward(
        self,
        module: torch.nn.Module,
        input: Optional[torch.Tensor],
        output: Optional[torch.Tensor],
        grad_output: torch.Tensor,
        args: tuple,
        kwargs: dict,
    ) -> torch.Tensor:
        """Return the relevance (modified gradient) of the module's first input.

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
        raise NotImplementedError

    def probe(self, input: torch.Tensor) -> Any:
        """Return what the backward pass needs to know about the input, taken in the forward pass (default: nothing)."""
        return None

    def relevance(self, call: _CallState, input: Optional[torch.Tensor], output: Optional[torch.Tensor], grad_output: torch.Tensor) -> torch.Tensor:
        """Dispatch one call's backward pass to :meth:`backward`."""
        return self.backward(call.module, input, output, grad_output, call.extra_args, call.kwargs)

    def release(self) -> None:
        """Drop whatever the hook cached while registered (called when its composite is removed)."""
        self._inplace_inputs.clear()

    def copy(self) -> "Hook":
        """Return an independent copy of this hook."""
        return copy.copy(self)

    def _pre_hook(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> Optional[tuple]:
        # An in-place module runs on a detached alias of its input, so its own autograd node never
        # enters the graph; rules that need the input get a copy, so the input survives.
        if not self._applies(args) or not getattr(module, "inplace", False):
            return None
        original = args[0]
        working = original.detach()
        if self.saves_input:
            working = working.clone()
        self._inplace_inputs[id(working)] = original
        return (working,) + tuple(args[1:]), kwargs

    def _forward_hook(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> Optional[torch.Tensor]:
        input = self._inplace_inputs.pop(id(args[0]), None) if args else None
        if input is None and not self._applies(args):
            return None
        if not isinstance(output, torch.Tensor):
            return None
        if input is None:
            input = args[0]
        # a detached alias is returned (never the input object itself, which autograd would treat as a view)
        state = _CallState(self, module, tuple(args[1:]), kwargs, output.detach(), self.probe(input))
        return _RuleFunction.apply(state, input)

    def _applies(self, args: tuple) -> bool:
        return (
            self.active
            and not _flag("suspended", False)
            and torch.is_grad_enabled()
            and len(args) > 0
            and isinstance(args[0], torch.Tensor)
            and args[0].requires_grad
        )

    def register(self, module: torch.nn.Module) -> RemovableHandleList:
        """Attach this rule to ``module``; the returned handle list detaches it."""
        return RemovableHandleList(
            [
                module.register_forward_pre_hook(self._pre_hook, with_kwargs=True),
                module.register_forward_hook(self._forward_hook, with_kwargs=True),
            ]
        )

    def _repr_fields(self) -> dict:
        return {}

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in self._repr_fields().items())
        return f"{type(self).__name__}({fields})"


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
    """

    def __init__(
        self,
        input_modifiers: Optional[Sequence[Callable]] = None,
        param_modifiers: Optional[Sequence[Union[ParamMod, Callable]]] = None,
        output_modifiers: Optional[Sequence[Callable]] = None,
        gradient_mapper: Optional[Callable] = None,
        reducer: Optional[Callable] = None,
    ) -> None:
        super().__init__()
        count = max(len(mods) for mods in (input_modifiers or [0], param_modifiers or [0], output_modifiers or [0]))
        self.input_modifiers = list(input_modifiers or [_identity] * count)
        self.param_modifiers = [ParamMod.ensure(mod) for mod in (param_modifiers or [_identity_param] * count)]
        self.output_modifiers = list(output_modifiers or [_identity] * count)
        if not len(self.input_modifiers) == len(self.param_modifiers) == len(self.output_modifiers):
            raise ValueError("input_modifiers, param_modifiers and output_modifiers must have equal lengths")
        self.gradient_mapper = gradient_mapper or (lambda grad_output, outputs: [grad_output / output for output in outputs])
        self.reducer = reducer or (lambda inputs, gradients: sum(i * g for i, g in zip(inputs, gradients)))

    def backward(self, module, input, output, grad_output, args, kwargs):
        """Return the relevance of the input from the modified forward maps, via autograd."""
        inputs = [modifier(input).detach().requires_grad_() for modifier in self.input_modifiers]
        outputs = []
        for modified_input, param_mod, output_modifier in zip(inputs, self.param_modifiers, self.output_modifiers):
            with swapped_parameters(module, param_mod(module)):
                outputs.append(output_modifier(module.forward(modified_input, *args, **kwargs)))
        grad_outputs = self.gradient_mapper(grad_output, outputs)
        gradients = torch.autograd.grad(outputs, inputs, grad_outputs=grad_outputs, allow_unused=True)
        gradients = [torch.zeros_like(i) if g is None else g for i, g in zip(inputs, gradients)]
        return self.reducer(inputs, gradients)


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
        self.module_map = module_map
        self.canonizers = list(canonizers or [])
        self.handles = RemovableHandleList()
        self.canonizer_instances: list = []
        self.rule_map: dict = {}
        self.uncovered: list = []

    def register(self, module: torch.nn.Module) -> None:
        """Apply the canonizers to ``module`` and attach the rules to its submodules."""
        if self.handles or self.canonizer_instances:
            raise RuntimeError("this composite is already registered; call remove() first")
        try:
            for canonizer in self.canonizers:
                self.canonizer_instances.extend(canonizer.apply(module))
            ctx: dict = {}
            for name, child in module.named_modules():
                hook = self.module_map(ctx, name, child) if self.module_map is not None else None
                if hook is not None:
                    self.handles.append(hook.register(child))
                    self.rule_map[name] = hook
        except BaseException:
            self.remove()
            raise
        modules = dict(module.named_modules())
        self.uncovered = [
            name for name in uncovered_modules(module, set(self.rule_map)) if not isinstance(modules[name], self.rule_free_types)
        ]
        if self.uncovered and self.warn_uncovered:
            warnings.warn(
                f"no rule covers these layers, their plain gradient is used: {', '.join(self.uncovered)}. "
                "Add them to the composite's layer_map or name_map.",
                stacklevel=2,
            )

    def remove(self) -> None:
        """Detach all rules, then undo all canonizers (last applied first)."""
        self.handles.remove()
        for hook in self.rule_map.values():
            hook.release()
        for instance in reversed(self.canonizer_instances):
            instance.remove()
        self.canonizer_instances = []
        self.rule_map = {}

    @contextmanager
    def context(self, module: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Register on ``module`` for the duration of the block; always removed on exit."""
        self.register(module)
        try:
            yield module
        finally:
            self.remove()

    @contextmanager
    def inactive(self) -> Iterator[None]:
        """Temporarily switch off the registered rules (plain gradients flow)."""
        hooks = list(self.rule_map.values())
        states = [hook.active for hook in hooks]
        try:
            for hook in hooks:
                hook.active = False
            yield
        finally:
            for hook, state in zip(hooks, states):
                hook.active = state
