"""The revision methods against closed forms written here in NumPy on fixed tensors, their hygiene and their errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lrp_lightning.revise import ClArC, ConceptActivationVector, RightReasonsLoss, RRClArCLoss, concept_masks

ACTIVATIONS = np.array(
    [[[[0.5, 1.0], [0.0, 2.0]], [[1.5, 0.2], [0.3, 0.1]], [[0.0, 0.4], [2.5, 1.0]]],
     [[[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.5, 0.5]], [[2.0, 0.0], [0.0, 2.0]]],
     [[[3.0, 2.0], [1.0, 0.0]], [[0.2, 0.4], [0.6, 0.8]], [[1.0, 1.0], [0.0, 0.0]]],
     [[[0.1, 0.2], [0.3, 0.4]], [[2.0, 2.0], [2.0, 1.0]], [[0.5, 0.5], [0.5, 0.5]]],
     [[[2.0, 2.5], [3.0, 1.5]], [[0.3, 0.0], [0.0, 0.3]], [[1.5, 0.0], [1.0, 0.0]]]]
)
IS_ARTIFACT = np.array([False, False, True, False, True])


def _numpy_signal(features, labels):
    target = labels.astype(float)
    pattern = ((features - features.mean(0)) * (target - target.mean())[:, None]).sum(0)
    return pattern / np.linalg.norm(pattern)


@pytest.mark.parametrize("pool", [True, False])
def test_signal_cav_is_haufes_pattern(pool):
    features = ACTIVATIONS.mean(axis=(2, 3)) if pool else ACTIVATIONS.reshape(5, -1)
    cav = ConceptActivationVector.fit(torch.tensor(ACTIVATIONS), torch.tensor(IS_ARTIFACT), pool=pool)
    np.testing.assert_allclose(cav.direction.numpy(), _numpy_signal(features, IS_ARTIFACT), rtol=1e-12)
    np.testing.assert_allclose(cav.clean_mean.numpy(), features[~IS_ARTIFACT].mean(0), rtol=1e-12)
    np.testing.assert_allclose(cav.artifact_mean.numpy(), features[IS_ARTIFACT].mean(0), rtol=1e-12)


def test_ridge_cav_is_the_regularised_least_squares_weight():
    features = ACTIVATIONS.mean(axis=(2, 3))
    centred = features - features.mean(0)
    target = IS_ARTIFACT.astype(float)
    weight = np.linalg.solve(centred.T @ centred + 0.5 * np.eye(3), centred.T @ (target - target.mean()))
    weight /= np.linalg.norm(weight)
    weight *= np.sign((features[IS_ARTIFACT].mean(0) - features[~IS_ARTIFACT].mean(0)) @ weight)
    cav = ConceptActivationVector.fit(torch.tensor(ACTIVATIONS), IS_ARTIFACT.tolist(), method="ridge", alpha=0.5)
    np.testing.assert_allclose(cav.direction.numpy(), weight, rtol=1e-10)


def test_every_cav_method_separates_a_shifted_cluster_on_held_out_samples():
    generator = torch.Generator().manual_seed(0)
    clean = torch.randn(80, 6, 3, 3, generator=generator, dtype=torch.float64)
    labels = torch.arange(80) % 2 == 0
    shifted = clean.clone()
    shifted[labels, 2] += 3.0  # the artifact lives in channel 2
    for method in ("signal", "ridge", "svm"):
        cav = ConceptActivationVector.fit(shifted[:40], labels[:40], method=method)
        assert cav.direction.argmax() == 2 and abs(float(cav.direction.norm()) - 1) < 1e-12, method
        assert cav.separability(shifted[40:], labels[40:]) >= 0.95, method


def test_cav_of_one_class_and_unknown_method_raise_naming_the_fix():
    with pytest.raises(ValueError, match="at least one artifact and one clean sample"):
        ConceptActivationVector.fit(torch.tensor(ACTIVATIONS), torch.zeros(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="signal, ridge, svm"):
        ConceptActivationVector.fit(torch.tensor(ACTIVATIONS), torch.tensor(IS_ARTIFACT), method="lda")
    with pytest.raises(ValueError, match="one flag per sample"):
        ConceptActivationVector.fit(torch.tensor(ACTIVATIONS), torch.tensor(IS_ARTIFACT[:3]))


class Identity(nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize("mode", ["p", "a"])
def test_clarc_projection_matches_numpy_at_every_position(mode):
    cav = ConceptActivationVector.fit(torch.tensor(ACTIVATIONS), torch.tensor(IS_ARTIFACT))
    model = nn.Sequential(Identity())
    with ClArC(model, "0", cav, mode=mode) as corrected:
        moved = corrected(torch.tensor(ACTIVATIONS)).numpy()
    v = cav.direction.numpy()
    z = (cav.clean_mean if mode == "p" else cav.artifact_mean).numpy()
    a = ACTIVATIONS.transpose(0, 2, 3, 1)  # channel vectors per position
    if mode == "p":
        expected = a - np.einsum("...c,c->...", a - z, v)[..., None] * v  # a - v v^T (a - z0)
    else:
        expected = a + np.einsum("...c,c->...", z - a, v)[..., None] * v  # a + v v^T (z1 - a)
    np.testing.assert_allclose(moved, expected.transpose(0, 3, 1, 2), rtol=1e-12, atol=1e-14)
    assert np.allclose(np.einsum("nchw,c->nhw", moved, v), z @ v)  # every position now scores as the reference


def test_clarc_flattened_cav_and_restoration_after_an_exception(assert_same_state, model_state):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    inputs = torch.rand(6, 1, 4, 4)
    cav = ConceptActivationVector.fit(model[0](inputs).detach(), torch.arange(6) < 3, pool=False)
    before = model_state(model)
    with pytest.raises(KeyError):
        with ClArC(model, "0", cav, mode="p"):
            model(inputs)
            raise KeyError("body fails")
    assert_same_state(before, model_state(model))
    expected = model[0](inputs).detach().flatten(1)
    v, z = cav.direction, cav.clean_mean
    expected = (expected - ((expected - z) @ v)[:, None] * v).reshape(6, 2, 2, 2)
    with ClArC(model, "0", cav) as corrected:
        captured = []
        handle = corrected[1].register_forward_hook(lambda m, args, out: captured.append(args[0].detach()))
        corrected(inputs)
        handle.remove()
    torch.testing.assert_close(captured[0], expected)
    assert_same_state(before, model_state(model))


def test_unknown_layer_raises_naming_the_known_layers():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    cav = ConceptActivationVector.fit(torch.randn(6, 4), torch.arange(6) < 3)
    with pytest.raises(ValueError, match=r"no layer 'features'.*'0', '1', '2'"):
        ClArC(model, "features", cav)
    with pytest.raises(ValueError, match=r"no layer 'head'.*'0', '1', '2'"):
        RRClArCLoss(cav, "head")(model, torch.randn(2, 3))


def _tanh_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


@pytest.mark.parametrize("aggregate", ["l2", "l1", "cosine"])
def test_rr_clarc_loss_and_its_parameter_gradient_match_numpy(aggregate):
    model = _tanh_net()
    inputs = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    cav = ConceptActivationVector.fit(model[1](model[0](inputs)).detach(), torch.arange(5) < 2, pool=False)
    loss = RRClArCLoss(cav, "1", aggregate=aggregate, weight=0.7)(model, inputs)
    weight = model[2].weight.detach().numpy()
    chosen = model(inputs).argmax(1).numpy()
    v = cav.direction.numpy()
    g = weight[chosen]  # the gradient of the largest logit with respect to the tanh output: its row of W2
    along = g @ v
    expected = {"l2": np.mean(along ** 2), "l1": np.mean(np.abs(along)),
                "cosine": np.mean((along / np.linalg.norm(g, axis=1)) ** 2)}[aggregate]
    np.testing.assert_allclose(float(loss.detach()), 0.7 * expected, rtol=1e-12)
    gradient, = torch.autograd.grad(loss, model[2].weight)
    expected_gradient = np.zeros_like(weight)
    for row, value, norm in zip(chosen, along, np.linalg.norm(g, axis=1)):
        if aggregate == "l2":
            expected_gradient[row] += 2 * value * v / 5
        elif aggregate == "l1":
            expected_gradient[row] += np.sign(value) * v / 5
        else:
            expected_gradient[row] += (2 * value / norm ** 2 * v - 2 * value ** 2 / norm ** 4 * weight[row]) / 5
    np.testing.assert_allclose(gradient.numpy() / 0.7, expected_gradient, rtol=1e-10, atol=1e-14)


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_ross_penalty_matches_numpy_for_a_linear_softmax_model():
    torch.manual_seed(0)
    model = nn.Linear(4, 3).double()
    inputs = torch.randn(6, 4, dtype=torch.float64)
    masks = torch.rand(6, 4, generator=torch.Generator().manual_seed(2)) > 0.5
    w, b, x = model.weight.detach().numpy(), model.bias.detach().numpy(), inputs.numpy()
    # d/dx sum_k log p_k = W^T (1 - K p)
    gradient = (1 - 3 * _softmax(x @ w.T + b)) @ w
    expected = np.sum((masks.numpy() * gradient) ** 2)
    for reduction, scale in (("sum", 1.0), ("mean", 1 / 6)):
        penalty = RightReasonsLoss(weight=2.0, reduction=reduction)(model, inputs, masks)
        np.testing.assert_allclose(float(penalty), 2.0 * scale * expected, rtol=1e-12)
    assert RightReasonsLoss()(model, inputs, masks).requires_grad


def test_lrp_penalty_matches_numpy_epsilon_on_a_linear_model(assert_same_state, model_state):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3)).double()
    inputs = torch.randn(6, 4, dtype=torch.float64)
    masks = torch.rand(6, 4, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    w, b, x = model[0].weight.detach().numpy(), model[0].bias.detach().numpy(), inputs.numpy()
    z = x @ w.T + b
    start = z * np.eye(3)[labels.numpy()]  # the output relevance R = f(x) of the label's logit (Bach et al.)
    stabilised = z + 1e-6 * np.where(z >= 0, 1.0, -1.0)
    relevance = x * ((start / stabilised) @ w)  # epsilon_plus maps nn.Linear to Epsilon(1e-6)
    expected = np.sum((masks.numpy() * relevance) ** 2)
    before = model_state(model)
    penalty = RightReasonsLoss("epsilon_plus", target="label")(model, inputs, masks, labels)
    assert_same_state(before, model_state(model))
    np.testing.assert_allclose(float(penalty), expected, rtol=1e-9)
    gradient, = torch.autograd.grad(penalty, model[0].bias)
    assert gradient.abs().sum() > 0


def test_right_reasons_loss_rejects_bad_masks_and_names():
    model = nn.Linear(4, 3)
    with pytest.raises(ValueError, match=r"inputs' shape \(2, 4\).*got \(2, 3\)"):
        RightReasonsLoss()(model, torch.randn(2, 4), torch.ones(2, 3))
    with pytest.raises(KeyError, match="registered composites"):
        RightReasonsLoss("epsilon_pluss")
    with pytest.raises(ValueError, match="log_prob_sum, label, max_logit"):
        RightReasonsLoss(target="probability")
    with pytest.raises(ValueError, match="labels="):
        RightReasonsLoss(target="label")(model, torch.randn(2, 4), torch.ones(2, 4))


def test_concept_masks_find_the_artifact_the_cav_points_at(assert_same_state, model_state):
    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 0.5]).reshape(2, 1, 1, 1))
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(72, 2))
    inputs = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    inputs[:, :, :2, -2:] = 5.0  # the artifact: a bright corner
    cav = ConceptActivationVector(torch.tensor([1.0, 0.0]), torch.zeros(2), torch.ones(2))
    before = model_state(model)
    masks = concept_masks(model, "0", cav, inputs, composite="epsilon_plus", quantile=0.9)
    assert_same_state(before, model_state(model))
    expected = torch.zeros_like(inputs, dtype=torch.bool)
    expected[:, :, :2, -2:] = True
    assert masks.dtype == torch.bool and torch.equal(masks, expected)
