"""Fixtures shared across test modules."""
import pytest
import torch


@pytest.fixture
def float64_default():
    """Make float64 the default dtype for the test (oracle comparisons need its precision)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
