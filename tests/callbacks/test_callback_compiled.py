"""AttributionCallback on a ``torch.compile``'d network and under ``precision="bf16-mixed"`` (real Trainer runs)."""
from __future__ import annotations

import pytest
import torch
from lightning.pytorch import seed_everything

from lrp_lightning.callbacks import AttributionCallback
from lrp_lightning.metrics import Sparseness

SEED = 4321


class GraphRecorder:
    """A ``torch.compile`` backend that records each graph it is asked to compile and runs it as traced."""

    def __init__(self) -> None:
        self.graphs: list[str] = []

    def __call__(self, graph_module: torch.fx.GraphModule, example_inputs: list) -> object:
        self.graphs.append(str(graph_module.graph))
        return graph_module.forward


@pytest.fixture
def fit(tiny_classifier, tiny_data, make_trainer):
    """Call ``fit(tmp_path, callbacks, compiled, **trainer_options)`` for a seeded 2-epoch fit of the tiny
    classifier, its ``net`` compiled with a recording backend when asked."""

    def fit(tmp_path, callbacks, compiled: bool, **kwargs):
        """Seeded 2-epoch fit of the tiny classifier, its ``net`` compiled with a recording backend when asked."""
        torch._dynamo.reset()
        seed_everything(SEED)
        model, recorder = tiny_classifier(), GraphRecorder()
        if compiled:
            model.net = torch.compile(model.net, backend=recorder)
        trainer = make_trainer(tmp_path, callbacks, **kwargs)
        trainer.fit(model, datamodule=tiny_data())
        return trainer, model, recorder

    return fit


def weights(model: torch.nn.Module) -> dict:
    return {key.replace("_orig_mod.", ""): value.clone() for key, value in model.state_dict().items()}


def test_compiled_network_is_explained_eagerly_without_recompiling_the_training_graph(tmp_path, fit):
    _, plain_model, bare = fit(tmp_path / "bare", [], compiled=True)
    callback = AttributionCallback(["epsilon_gamma_box", "gradient"], num_samples=4)
    trainer, model, recorder = fit(tmp_path / "explained", [callback], compiled=True)
    assert recorder.graphs and recorder.graphs == bare.graphs  # no graph compiled for the explanations
    assert isinstance(model.net, torch._dynamo.eval_frame.OptimizedModule)
    for key, value in weights(plain_model).items():
        assert torch.equal(value, weights(model)[key]), key
    eager_trainer, _, _ = fit(
        tmp_path / "eager", [AttributionCallback(["epsilon_gamma_box", "gradient"], num_samples=4)], compiled=False
    )
    for name, value in eager_trainer.callback_metrics.items():
        if name.startswith("attribution/"):
            assert float(trainer.callback_metrics[name]) == pytest.approx(float(value), rel=1e-5, abs=1e-7), name


def test_bf16_mixed_training_is_explained_in_float32(tmp_path, fit):
    _, bare_model, _ = fit(tmp_path / "bare", [], compiled=False, precision="bf16-mixed")
    callback = AttributionCallback(
        ["epsilon_gamma_box", "gradient"], num_samples=4, metrics={"sparseness": Sparseness()}
    )
    trainer, model, _ = fit(tmp_path / "explained", [callback], compiled=False, precision="bf16-mixed")
    for key, value in weights(bare_model).items():
        assert torch.equal(value, weights(model)[key]), key
    assert next(model.parameters()).dtype == torch.float32
    # the last explanation saw the final weights: recompute the plain gradient in float32 here
    inputs, labels = callback.samples.inputs, callback.samples.labels
    model.eval()
    inputs = inputs.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(inputs).gather(1, labels[:, None]).sum(), inputs)
    sorted_values = gradient.abs().flatten(1).double().sort(dim=1).values
    count = sorted_values.shape[1]
    weights_gini = 2 * torch.arange(1, count + 1, dtype=torch.float64) - count - 1
    expected = ((weights_gini * sorted_values).sum(dim=1) / (count * sorted_values.sum(dim=1))).mean()
    logged = float(trainer.callback_metrics["attribution/gradient/sparseness"])
    assert logged == pytest.approx(float(expected), rel=1e-5)
    assert 0 < float(trainer.callback_metrics["attribution/epsilon_gamma_box/sparseness"]) < 1
