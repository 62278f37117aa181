"""RightReasonsLoss with an LRP composite: the penalty's gradient in the parameters against central finite
differences (float64), with the output relevance R = z * ds/dz taking the logits in the graph."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lrp_lightning.revise import RightReasonsLoss

STEP = 1e-4
TOLERANCE = 1e-6


def _mlp_away_from_kinks():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    inputs = torch.rand(4, 6, dtype=torch.float64)
    smallest = min(float(model[0](inputs).abs().min()), float(model(inputs).abs().min()))
    assert smallest > 1e2 * STEP  # ReLU switches and the logits (Epsilon's denominators) far from zero
    return model, inputs


@pytest.mark.parametrize("target", ["log_prob_sum", "label", "max_logit"])
def test_lrp_penalty_gradient_matches_finite_differences(target):
    model, inputs = _mlp_away_from_kinks()
    masks = torch.rand(inputs.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 1])
    penalty = RightReasonsLoss("epsilon_plus", target=target)
    parameters = list(model.parameters())
    value = penalty(model, inputs, masks, labels)
    grads = torch.autograd.grad(value, parameters)
    generator = torch.Generator().manual_seed(2)
    for index, (parameter, grad) in enumerate(zip(parameters, grads)):
        direction = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
        values = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                parameter.add_(sign * STEP * direction)
            values.append(float(penalty(model, inputs, masks, labels).detach()))
            with torch.no_grad():
                parameter.sub_(sign * STEP * direction)
        numeric, analytic = (values[0] - values[1]) / (2 * STEP), float((grad * direction).sum())
        # the floor: a central difference's rounding error, ~1e-16 |P| / STEP = 1e-12 |P|, is 1e-2 of 1e-6 * 1e-4 |P|
        scale = max(abs(numeric), abs(analytic), 1e-4 * abs(float(value)))
        assert abs(numeric - analytic) <= TOLERANCE * scale, (index, numeric, analytic)
