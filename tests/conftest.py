"""Fixtures shared across the test folders.

The tests live in capability folders (``engine/``, ``transformer/``, ``metrics/``, ``callbacks/``,
``demo/``, ...; no ``__init__.py``, file names unique across ``tests/``). What several folders share
(small models, Trainer runs, event readers, memory probes) is written in the private package
``tests/_support`` and handed to the tests by the fixtures below; a folder's own shared pieces are
fixtures of its ``conftest.py``. Test modules import none of it: they name the fixture.

A fixture named after a function or class hands out that function or class (tests call it, as often and
with what arguments they need); the torchvision models are built once per session and default dtype and
each call returns an independent copy.
"""
import copy
import functools
from typing import Callable

import pytest
import torch

from _support import engine_models
from _support.fixtures import expose

expose(globals(), "engine_models", {name: name for name in (
    "randomize_batch_norms", "cnn_with_batch_norm", "mlp", "conv1d_net", "attribute", "model_state",
    "assert_same_state",
)})
expose(globals(), "lightning_runs", {
    "tiny_classifier": "TinyClassifier", "tiny_data": "TinyData", "dict_dataset": "DictDataset",
    "image_data": "image_data", "make_trainer": "make_trainer", "read_events": "read_events",
    "rng_states": "rng_states", "assert_rng_equal": "assert_rng_equal", "frozen_classifier": "FrozenClassifier",
    "seeded_fit": "seeded_fit", "assert_same_weights": "assert_same_weights", "gini": "gini",
    "exploding_composite": "ExplodingComposite", "image_size": "IMAGE_SIZE", "num_classes": "NUM_CLASSES",
})
expose(globals(), "model_snapshots", {name: name for name in (
    "module_state", "assert_same_module_state", "random_state", "preserved_model_state", "assert_same_preserved_state",
)})
expose(globals(), "memory_probe", {name: name for name in (
    "assert_memory_flat", "rule_references", "saved_activation_bytes", "storage_bytes",
)} | {"growth_share": "GROWTH_SHARE", "per_call_types": "PER_CALL_TYPES"})
expose(globals(), "transformer_models", {name: name for name in (
    "load_golden", "language_model", "golden_language_model", "tiny_language_model", "torchvision_vit",
    "timm_vit_from_torchvision", "token_relevance", "image_relevance", "relative_error",
)}, requires="transformers")


@pytest.fixture(scope="session")
def cached_model() -> Callable[[Callable[[], torch.nn.Module]], torch.nn.Module]:
    """``cached_model(build)``: an independent copy of ``build()``, built once per session and default dtype
    (a test may run under float64)."""
    built = {}

    def copy_of(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
        key = (build, torch.get_default_dtype())
        if key not in built:
            built[key] = build()
        return copy.deepcopy(built[key])

    return copy_of


@pytest.fixture(scope="session")
def small_vgg_bn(cached_model):
    """Call for a torchvision VGG11-BN with a small classifier (input 3x32x32, 5 classes), randomised BatchNorms."""
    return functools.partial(cached_model, engine_models.small_vgg_bn)


@pytest.fixture(scope="session")
def resnet18(cached_model):
    """Call for a torchvision ResNet18 (BasicBlock, 5 classes), randomised BatchNorms."""
    return functools.partial(cached_model, engine_models.resnet18)


@pytest.fixture(scope="session")
def resnet_bottleneck(cached_model):
    """Call for a torchvision ResNet of Bottleneck blocks (one per stage, 5 classes), randomised BatchNorms."""
    return functools.partial(cached_model, engine_models.resnet_bottleneck)


@pytest.fixture
def float64_default():
    """Make float64 the default dtype for the test (oracle comparisons need its precision)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(autouse=True)
def default_dtype_unchanged(request):
    """Fail a test that leaves torch's default dtype changed (later tests would build their inputs in it)."""
    before = torch.get_default_dtype()
    yield
    after = torch.get_default_dtype()
    if after != before:
        torch.set_default_dtype(before)
        pytest.fail(f"{request.node.nodeid} left the default dtype {after} (was {before})")
