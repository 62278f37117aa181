"""Fixtures of the demo tests."""
import os
import random
from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator

import numpy as np
import pytest
import torch


@contextmanager
def _restored_global_state() -> Iterator[None]:
    """Undo what a script run in-process changes globally: RNG states and environment variables."""
    rng = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    environment = dict(os.environ)
    try:
        yield
    finally:
        torch.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        random.setstate(rng[2])
        os.environ.clear()
        os.environ.update(environment)


@pytest.fixture(scope="session")
def restored_global_state() -> Callable[[], ContextManager[None]]:
    """``with restored_global_state():`` undoes what a script run in-process changes globally (RNG states and
    environment variables)."""
    return _restored_global_state
