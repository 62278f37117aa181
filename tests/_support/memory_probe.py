"""Measuring whether repeated explanations keep memory flat (shared by the memory tests).

Live tensor memory is the total size of the storages of the tensors Python's garbage collector
tracks, each storage counted once (views share their base's storage); with the collector switched
off, the tensors created since and still alive are the collector's youngest generation, so growth is
measured without scanning the whole heap. One call's activation size is what autograd saves for the
backward pass of one explanation (storages counted once, the model's own parameters and buffers left
out): a leak of a call's graph keeps at least a part of it alive, a flat process none of it.
"""
from __future__ import annotations

import contextlib
import gc
import weakref
from typing import Callable, Iterable, Iterator

import torch

# the per-call objects of the engine's rules (what one hooked module call leaves for its backward pass)
PER_CALL_TYPES = ("_CallState", "_OutputCall")
# growth over the measured calls allowed, as a share of one call's activations: a leak of even one
# layer's output per call exceeds it, the allocator's and Python's own bookkeeping do not reach it
GROWTH_SHARE = 0.05


def _storage_key(tensor: torch.Tensor) -> tuple:
    storage = tensor.untyped_storage()
    return (tensor.device, storage.data_ptr(), storage.nbytes())


def _is_fake(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` owns no memory (a FakeTensor or FunctionalTensor left by ``torch.compile``)."""
    try:
        tensor.untyped_storage().data_ptr()
    except RuntimeError:
        return True
    return False


def storage_bytes(tensors: Iterable[torch.Tensor], exclude: frozenset = frozenset()) -> int:
    """Total size of the distinct storages of ``tensors`` (meta tensors and storages in ``exclude`` left out)."""
    storages = {}
    for tensor in tensors:
        if tensor.device.type == "meta" or tensor.layout != torch.strided or _is_fake(tensor):
            continue
        key = _storage_key(tensor)
        if key not in exclude:
            storages[key] = key[2]
    return sum(storages.values())


def new_tensor_bytes(exclude: frozenset = frozenset()) -> int:
    """Bytes of the distinct storages of the tensors created since the collector was switched off by
    :func:`collector_off` and still alive (the collector's youngest generation; see there)."""
    return storage_bytes((obj for obj in gc.get_objects(generation=0) if isinstance(obj, torch.Tensor)), exclude)


def new_per_call_objects() -> list:
    """The rule objects of hooked module calls created since :func:`collector_off` and still alive
    (collectable or not)."""
    return [obj for obj in gc.get_objects(generation=0) if type(obj).__name__ in PER_CALL_TYPES]


def model_storages(model: torch.nn.Module) -> frozenset:
    """The storages of a model's parameters and buffers."""
    return frozenset(_storage_key(tensor) for tensor in (*model.parameters(), *model.buffers()))


def saved_activation_bytes(model: torch.nn.Module, explain: Callable[[], object]) -> int:
    """Bytes autograd saves for the backward pass while ``explain()`` runs, parameters and buffers of
    ``model`` not counted (each storage once)."""
    saved = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.detach())
        return tensor.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        explain()
    return storage_bytes(saved, exclude=model_storages(model))


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    """Switch the cyclic garbage collector off: whatever is freed inside is freed by reference counting.

    The youngest generation is collected first (cheap), so that inside it holds exactly the objects
    created since, that are still alive or garbage not freed by reference counting: Python tracks
    every tensor there, and without collections nothing leaves it.
    """
    was_enabled = gc.isenabled()
    gc.collect(0)
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def assert_memory_flat(
    model: torch.nn.Module, explain_once: Callable[[list], None], calls: int = 10, warm_up: int = 2
) -> None:
    """Run ``explain_once(rule_refs)`` ``warm_up + calls`` times with the garbage collector off and assert
    that nothing of the calls stays alive.

    ``explain_once`` enters an attributor (or a composite's context), explains one batch, appends weak
    references to the rules attached to the model to ``rule_refs`` and leaves the context, dropping
    everything it made. Asserted, all without a garbage collection: every rule attached during a call
    is gone after it (per-call rule objects refer to their rule, so none of them survives either, which
    is checked once at the end); the bytes of the tensors created since the warm-up and still alive
    stay within ``GROWTH_SHARE`` of one call's saved activations.
    """
    activation = saved_activation_bytes(model, lambda: explain_once([]))
    assert activation > 0, "the explanation saved nothing for its backward pass: nothing is measured"
    exclude = model_storages(model)
    with collector_off():
        for _ in range(warm_up):
            explain_once([])
        before = new_tensor_bytes(exclude)
        for _ in range(calls):
            rule_refs: list = []
            explain_once(rule_refs)
            assert rule_refs, "the call attached no rule to the model: nothing is measured"
            alive = [ref() for ref in rule_refs if ref() is not None]
            assert not alive, f"{len(alive)} rules outlive their call, e.g. {alive[0]!r}"
        growth = new_tensor_bytes(exclude) - before
        left = new_per_call_objects()
    assert growth <= GROWTH_SHARE * activation, (
        f"live tensors grew by {growth} bytes over {calls} calls; one call saves {activation} bytes of activations"
    )
    assert not left, f"{len(left)} per-call rule objects outlive their call, e.g. {type(left[0]).__name__}"


def rule_references(composite) -> list:
    """Weak references to the rules a registered composite attached."""
    return [weakref.ref(hook) for hook in composite.rule_map.values()]
