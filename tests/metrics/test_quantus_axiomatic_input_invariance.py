"""InputInvariance follows Kindermans et al. (2019): gradients are invariant to a shift the model's first
layer absorbs, LRP-epsilon (Gradient x Input on ReLU nets) is not.

Not compared with Quantus 0.6.0: its InputInvariance leaves the first value of every sample unshifted
(seen by recording the inputs its explain_func receives), raises AttributeError for a model whose first
layer is Linear, and tests exact float equality, so its outcome is not the definition's. The tests check
the construction (the shifted copy maps x + s to f(x), the user's model untouched) and the paper's results.
"""
import pytest
import torch
from torch import nn

from lrp_lightning.attribution import Gradient
from lrp_lightning.composites import COMPOSITES
from lrp_lightning.metrics import InputInvariance
from lrp_lightning.metrics.input_invariance import shift_absorbing_copy

pytestmark = pytest.mark.usefixtures("float64_default")


@pytest.fixture
def padded_cnn(small_cnn):
    """Call ``padded_cnn()`` for the small CNN on 2x5x5 inputs."""

    def padded_cnn() -> nn.Module:
        return small_cnn(2, 5, 5)

    return padded_cnn


def data(kind: str):
    generator = torch.Generator().manual_seed(4)
    shape = (4, 2, 5, 5) if kind == "cnn" else (4, 12)
    return torch.randn(shape, generator=generator, dtype=torch.float64), torch.tensor([0, 1, 2, 3])


def explain(model, inputs, target, composite=None):
    with Gradient(model, composite) as attributor:
        return attributor(inputs, target)[1]


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
@pytest.mark.parametrize("shift", [-1.0, 2.5])
def test_the_shifted_copy_maps_shifted_inputs_to_the_original_scores_and_leaves_the_model_alone(
    kind, shift, small_mlp, padded_cnn
):
    model = padded_cnn() if kind == "cnn" else small_mlp()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    inputs, _ = data(kind)
    shifted = shift_absorbing_copy(model, shift)
    with torch.no_grad():
        torch.testing.assert_close(shifted(inputs + shift), model(inputs), rtol=1e-12, atol=1e-12)
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert not any(parameter is original for parameter in shifted.parameters() for original in model.parameters())


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_gradient_is_input_invariant_and_lrp_epsilon_is_not(kind, small_mlp, padded_cnn):
    model = padded_cnn() if kind == "cnn" else small_mlp()
    inputs, target = data(kind)
    gradient = InputInvariance("gradient", input_shift=-1.0)
    gradient.update(model, inputs, explain(model, inputs, target), target)
    assert gradient.compute().item() == 1.0
    epsilon = InputInvariance("epsilon_plus", input_shift=-1.0)
    epsilon.update(model, inputs, explain(model, inputs, target, COMPOSITES["epsilon_plus"]()), target)
    assert epsilon.compute().item() == 0.0


def test_input_invariance_rejects_bad_arguments(small_mlp):
    with pytest.raises(KeyError, match="unknown composite"):
        InputInvariance("no_such_explainer")
    with pytest.raises(ValueError, match="one explainer"):
        InputInvariance(["gradient", "epsilon_plus"])
    with pytest.raises(ValueError, match="token ids"):
        InputInvariance().update(small_mlp(), torch.zeros(2, 12, dtype=torch.long), torch.zeros(2, 12),
                                 torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="Linear or Conv"):
        InputInvariance().update(nn.Sequential(nn.ReLU()), torch.zeros(2, 4), torch.zeros(2, 4),
                                 torch.zeros(2, dtype=torch.long))


def test_input_invariance_is_nan_for_nan_attributions(small_mlp):
    model = small_mlp()
    inputs, target = data("mlp")
    attributions = explain(model, inputs, target)
    attributions[1, 3] = float("nan")
    metric = InputInvariance()
    metric.update(model, inputs, attributions, target)
    assert torch.isnan(metric.compute())
