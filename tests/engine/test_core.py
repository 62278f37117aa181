"""The hook machinery (lrp_lightning.core): the stabilizer of every rule's denominators."""
import pytest
import torch

from lrp_lightning.core import Stabilizer

pytestmark = pytest.mark.usefixtures("float64_default")


def test_stabilizer_moves_denominators_away_from_zero_with_sign_of_zero_positive():
    values = torch.tensor([-2.0, -1e-9, 0.0, 1e-9, 3.0])
    epsilon = 1e-6
    torch.testing.assert_close(
        Stabilizer(epsilon)(values), torch.tensor([-2.0 - epsilon, -1e-9 - epsilon, epsilon, 1e-9 + epsilon, 3.0 + epsilon])
    )
    torch.testing.assert_close(
        Stabilizer(epsilon, clip=True)(values), torch.tensor([-2.0, -epsilon, epsilon, epsilon, 3.0])
    )
    assert Stabilizer.ensure(0.5).epsilon == 0.5 and Stabilizer.ensure(torch.abs) is torch.abs
    with pytest.raises(TypeError, match="float or a callable"):
        Stabilizer.ensure("big")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_stabilizer_is_exactly_d_plus_signed_epsilon_and_sign_of_negative_zero_is_positive(dtype):
    generator = torch.Generator().manual_seed(0)
    values = torch.cat([torch.randn(4096, generator=generator), torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e30])]).to(dtype)
    for epsilon in (1e-6, 0.25, 0.0):
        stabilized = Stabilizer(epsilon)(values)
        shift = torch.tensor([epsilon if value >= 0 else -epsilon for value in values.tolist()], dtype=dtype)
        assert torch.equal(stabilized, values + shift)
        assert not torch.signbit(stabilized[values == 0]).any()
