"""Unit tests of the callback's building blocks (no Trainer): hygiene, samples, targets,
explainers, canonizer choice, metric sets, dashboard layout, sinks."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from lrp_lightning.callbacks import AttributionCallback
from lrp_lightning.auto_canonizers import auto_canonizers, batch_norm_follows_linear
from lrp_lightning.callbacks.attribution.dashboard import CurveFigure, custom_scalars_layout
from lrp_lightning.callbacks.explainers import build_explainer, channel_bounds, parse_explainers
from lrp_lightning.callbacks.explanation import explain
from lrp_lightning.callbacks.hygiene import attribution_mode, preserved_state
from lrp_lightning.callbacks.metric_set import MetricSet, default_metrics, parse_metrics
from lrp_lightning.callbacks.samples import Samples, collect_samples, split_batch
from lrp_lightning.callbacks.sinks import FileSink
from lrp_lightning.callbacks.tables import Table
from lrp_lightning.callbacks.targets import resolve_targets
from lrp_lightning.canonizers import SequentialMergeBatchNorm
from lrp_lightning.composites import EpsilonGammaBox, EpsilonPlusFlat
from lrp_lightning.metrics import Complexity, RelevanceMassAccuracy, Sparseness


def test_preserved_state_restores_everything_after_an_error(
    assert_rng_equal, rng_states, tiny_classifier, assert_same_preserved_state, preserved_model_state
):
    model = tiny_classifier()
    model.train()
    model.net[0].weight.grad = torch.ones_like(model.net[0].weight)
    model.net[5].bias.requires_grad_(False)
    before, rng = preserved_model_state(model), rng_states()
    with pytest.raises(RuntimeError, match="boom"):
        with preserved_state(model):
            model.eval()
            with torch.no_grad():
                model.net[0].weight.mul_(3)
                model.net[1].running_mean.add_(1)
            model.net[0].weight.grad.zero_()
            model.net[5].weight.grad = torch.ones_like(model.net[5].weight)
            model.net[5].bias.requires_grad_(True)
            model.net[0].register_forward_hook(lambda *args: None)
            model.net[2].register_full_backward_hook(lambda *args: None)
            nn.modules.module.register_module_forward_hook(lambda *args: None)
            model.net[4] = nn.Identity()
            model.net[5].weight = nn.Parameter(torch.zeros_like(model.net[5].weight))
            model.net[1].forward = lambda x: x
            model.net[1].double()
            torch.rand(3), np.random.rand(), random.random()
            raise RuntimeError("boom")
    assert_same_preserved_state(before, preserved_model_state(model))
    assert_rng_equal(rng, rng_states())
    assert not nn.modules.module._global_forward_hooks
    assert model.net[1].weight.dtype == torch.float32 and "forward" not in vars(model.net[1])


def test_attribution_mode_leaves_inference_mode_and_disables_autocast():
    weight = torch.ones(3, requires_grad=True)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        with attribution_mode(torch.device("cpu")):
            x = torch.ones(3, requires_grad=True)
            out = (weight * x).sum()
            grad, = torch.autograd.grad(out, x)
            matmul = torch.ones(2, 2) @ torch.ones(2, 2)
    assert torch.equal(grad, torch.ones(3)) and matmul.dtype == torch.float32


def test_split_batch_forms():
    x, y, m = torch.zeros(2, 3), torch.tensor([0, 1]), torch.ones(2, 3, dtype=torch.bool)
    assert split_batch((x, y, "meta"))[0] is x and split_batch((x, y, "meta"))[1] is y
    assert split_batch([x])[1] is None
    assert split_batch(x) == (x, None, None)
    assert split_batch({"image": x, "label": y, "mask": m}) == (x, y, m)
    assert split_batch({"whatever": 1}, lambda batch: (x, y, m)) == (x, y, m)
    assert split_batch("anything", lambda batch: x) == (x, None, None)
    with pytest.raises(TypeError, match="batch_to_input"):
        split_batch({"pixels": x})
    with pytest.raises(TypeError, match="batch_to_input"):
        split_batch(object())


def test_collect_samples_takes_the_first_n_and_leaves_every_rng_alone(assert_rng_equal, image_data, rng_states):
    data = image_data(20)
    generator = torch.Generator().manual_seed(5)
    loader = DataLoader(data, batch_size=3, shuffle=True, generator=generator)
    generator_state, rng = generator.get_state(), rng_states()
    samples = collect_samples(loader, 7)
    assert torch.equal(generator.get_state(), generator_state)
    assert_rng_equal(rng, rng_states())
    fresh = DataLoader(data, batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(5))
    first = list(fresh)[:3]
    assert torch.equal(samples.inputs, torch.cat([x for x, _ in first])[:7])
    assert torch.equal(samples.labels, torch.cat([y for _, y in first])[:7])


def test_collect_samples_from_dicts_and_worker_loaders(dict_dataset, image_data):
    data = image_data(10)
    samples = collect_samples(DataLoader(dict_dataset(data), batch_size=4), 6)
    assert torch.equal(samples.inputs, data.tensors[0][:6]) and torch.equal(samples.labels, data.tensors[1][:6])
    loader = DataLoader(data, batch_size=4, num_workers=2, persistent_workers=True)
    samples = collect_samples(loader, 100)
    assert len(samples) == 10 and loader._iterator is None
    with pytest.raises(ValueError, match="no samples"):
        collect_samples([], 3)


def test_first_of_several_dataloaders_and_lazy_top_level_import(image_data):
    import lrp_lightning
    from lrp_lightning.callbacks.samples import _first_loader

    first, second = DataLoader(image_data(2)), DataLoader(image_data(3))
    assert _first_loader([first, second]) is first
    assert _first_loader({"a": first, "b": second}) is first
    assert _first_loader(first) is first and _first_loader([]) is None
    assert lrp_lightning.AttributionCallback is AttributionCallback


def test_samples_validation_and_state():
    with pytest.raises(ValueError, match="labels"):
        Samples(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match="floating point or integer token ids"):
        Samples(torch.zeros(3, 2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        Samples(torch.zeros(3, 2), torch.zeros(3))
    with torch.inference_mode():
        inference = torch.ones(2, 3)
    samples = Samples(inference, torch.tensor([1, 2]))
    assert not samples.inputs.is_inference() and samples.inputs.dtype == torch.float32
    restored = Samples(**samples.state_dict())
    assert torch.equal(restored.inputs, samples.inputs) and torch.equal(restored.labels, samples.labels)
    head = Samples(torch.arange(6.0).view(3, 2), torch.tensor([0, 1, 2]), torch.ones(3, 2)).head(2)
    assert head.inputs.tolist() == [[0, 1], [2, 3]] and head.labels.tolist() == [0, 1] and head.masks.shape == (2, 2)


def test_resolve_targets():
    outputs = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    labels = torch.tensor([2, 0])
    assert resolve_targets("label", outputs, labels).tolist() == [2, 0]
    assert resolve_targets("prediction", outputs, labels).tolist() == [1, 0]
    assert resolve_targets(2, outputs, None).tolist() == [2, 2]
    assert resolve_targets(lambda out, lab: out.argmin(dim=1), outputs, labels).tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        resolve_targets(3, outputs, None)
    with pytest.raises(ValueError, match="labelled"):
        resolve_targets("label", outputs, None)
    with pytest.raises(ValueError, match="num_classes"):
        resolve_targets("label", torch.zeros(2), labels)


def test_parse_explainers_names_and_errors():
    composite = EpsilonPlusFlat()
    assert parse_explainers("epsilon_gamma_box") == [("epsilon_gamma_box", "epsilon_gamma_box")]
    assert [name for name, _ in parse_explainers([composite, "gradient", "gradient"])] == [
        "epsilon_plus_flat", "gradient", "gradient_2"]
    assert parse_explainers({"mine": composite}) == [("mine", composite)]
    with pytest.raises(KeyError) as error:
        parse_explainers(["epsilon_plus", "lrp_magic"])
    assert "lrp_magic" in str(error.value) and "epsilon_gamma_box" in str(error.value) and "smoothgrad" in str(error.value)
    with pytest.raises(TypeError):
        parse_explainers([3])
    with pytest.raises(ValueError):
        parse_explainers([])


def test_build_explainer_box_bounds_from_samples_and_canonizers(tiny_classifier):
    model = tiny_classifier().eval()
    inputs = torch.stack([torch.full((3, 8, 8), float(v)) for v in (-2, 5)]) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    low, high = channel_bounds(inputs)
    assert low.shape == (1, 3, 1, 1) and low.flatten().tolist() == [-2, -4, -6] and high.flatten().tolist() == [5, 10, 15]
    explainer = build_explainer("egb", "epsilon_gamma_box", model, inputs)
    assert isinstance(explainer.composite, EpsilonGammaBox) and explainer.is_lrp
    assert [type(c) for c in explainer.composite.canonizers] == [SequentialMergeBatchNorm]
    reference = EpsilonGammaBox(low=low, high=high, canonizers=[SequentialMergeBatchNorm()])
    x = inputs[:1] * 0.3
    with explainer.attributor(model) as attributor:
        _, relevance = attributor(x, torch.tensor([1]))
    with torch.enable_grad():
        x_ref = x.clone().requires_grad_(True)
        with reference.context(model) as modified:
            out = modified(x_ref)
            expected, = torch.autograd.grad(out, x_ref, torch.eye(3)[[1]])
    assert torch.allclose(relevance, expected)
    given = build_explainer("egb", "epsilon_gamma_box", model, inputs, low=-1.0, high=[1.0, 2.0, 3.0], canonizers=None)
    assert given.composite.canonizers == []
    with pytest.raises(ValueError, match="finite"):
        build_explainer("egb", "epsilon_gamma_box", model, inputs, low=-float("inf"))
    smooth = build_explainer("sg", "smoothgrad", model, inputs)
    assert not smooth.is_lrp and smooth.attributor(model).seed == 0


def test_auto_canonizers(tiny_classifier):
    tvm = pytest.importorskip("torchvision.models")
    from lrp_lightning.torchvision import ResNetCanonizer, VGGCanonizer

    with torch.device("meta"):  # only the architecture matters: skip weight initialisation
        resnet, vgg = tvm.resnet18(), tvm.vgg11_bn()
    assert [type(c) for c in auto_canonizers(resnet)] == [ResNetCanonizer]
    assert [type(c) for c in auto_canonizers(vgg)] == [VGGCanonizer]
    assert batch_norm_follows_linear(tiny_classifier())
    assert [type(c) for c in auto_canonizers(tiny_classifier())] == [SequentialMergeBatchNorm]
    plain = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.BatchNorm1d(3))
    assert not batch_norm_follows_linear(plain) and auto_canonizers(plain) == []


def test_metric_set_feeds_metrics_by_name_and_never_syncs(tiny_classifier):
    model = tiny_classifier().eval()
    inputs = torch.randn(4, 3, 8, 8)
    attributions = torch.randn(4, 3, 8, 8)
    metrics = default_metrics(inputs)
    assert set(metrics) == {"sparseness", "complexity", "aopc_morf"}
    assert metrics["aopc_morf"].patch_size == 1 and metrics["aopc_morf"].steps == 8
    metric_set = MetricSet(metrics, torch.device("cpu"), conservation=True)
    assert all(not metric._to_sync for metric in metric_set.metrics.values())
    targets = torch.tensor([0, 1, 2, 0])
    one_hot = torch.eye(3)[targets]
    results = metric_set.evaluate({"model": model, "inputs": inputs, "attributions": attributions, "target": targets,
                                   "input_relevance": attributions, "output_relevance": one_hot, "mask": None})
    reference = Sparseness()
    reference.update(attributions)
    assert results.scalars["sparseness"] == pytest.approx(float(reference.compute()))
    total = attributions.sum(dim=(1, 2, 3)).double()
    assert results.scalars["conservation"] == pytest.approx(float(((total - 1).abs()).mean()), rel=1e-6)
    assert results.curves["aopc_morf"].shape == (9,)
    assert "complexity" in results.scalars and "aopc_morf" in results.scalars
    assert set(default_metrics(torch.randn(4, 2, 3))) == {"sparseness", "complexity"}


def test_parse_metrics_errors():
    assert parse_metrics(None) is None
    assert list(parse_metrics([Sparseness(), Complexity()])) == ["sparseness", "complexity"]
    with pytest.raises(TypeError):
        parse_metrics({"x": object()})
    with pytest.raises(ValueError):
        parse_metrics({"a/b": Sparseness()})

    class NeedsLoss(Sparseness):
        def update(self, loss: torch.Tensor) -> None:
            """Takes an argument the callback does not have."""

    with pytest.raises(ValueError, match="loss"):
        parse_metrics([NeedsLoss()])


def test_explain_runs_bf16_models_in_float32_and_restores_them(
    tiny_classifier, assert_same_preserved_state, preserved_model_state
):
    model = tiny_classifier().to(torch.bfloat16).eval()
    before = preserved_model_state(model)
    samples = Samples(torch.randn(2, 3, 8, 8), torch.tensor([0, 1]))
    explainer = build_explainer("epf", "epsilon_plus_flat", model, samples.inputs)
    metric_set = MetricSet({"sparseness": Sparseness()}, torch.device("cpu"), conservation=True)
    reports = explain(model, samples, "label", [explainer], [metric_set], torch.device("cpu"), "coldnhot", lambda n: True)
    assert reports[0].error is None and reports[0].relevance.dtype == torch.float32
    assert reports[0].picture.dtype == torch.uint8 and reports[0].picture.shape == (3, 2 * 8 + 2, 3 * 8 + 4)
    assert "net.0" in reports[0].rule_map.markdown and "net.5" in reports[0].rule_map.markdown
    assert [row[0] for row in reports[0].rule_map.rows if row[0] in ("net.0", "net.5")] == ["net.0", "net.5"]
    assert_same_preserved_state(before, preserved_model_state(model))
    assert next(model.parameters()).dtype == torch.bfloat16


def test_explain_reports_an_explainer_failure_and_goes_on(tiny_classifier):
    model = tiny_classifier().eval()
    samples = Samples(torch.randn(2, 3, 8, 8), torch.tensor([0, 1]))
    explainers = [build_explainer(n, n, model, samples.inputs) for n in ("epsilon_plus", "gradient")]
    sets = [MetricSet({"needs_mask": RelevanceMassAccuracy()}, torch.device("cpu"), False),
            MetricSet({"sparseness": Sparseness()}, torch.device("cpu"), False)]
    reports = explain(model, samples, "label", explainers, sets, torch.device("cpu"), None, lambda n: False)
    assert reports[0].error is not None and reports[1].error is None and reports[1].picture is None


def test_custom_scalars_layout_and_curve_figure():
    layout = custom_scalars_layout(["a", "b.c"], ["sparseness"], baseline="random")
    charts = layout["attribution/sparseness"]  # one category per metric, one chart per explainer, named after it
    assert list(charts) == ["a vs random (baseline)", "b.c vs random (baseline)"]
    kind, regexes = charts["b.c vs random (baseline)"]
    assert kind == "Multiline" and regexes == [r"^attribution/b\.c/sparseness$", "^attribution/random/sparseness$"]
    without_baseline = custom_scalars_layout(["a"], ["drift_rank"])
    assert without_baseline == {"attribution/drift_rank": {"a": ["Multiline", ["^attribution/a/drift_rank$"]]}}
    picture = CurveFigure("aopc").render({"a": torch.linspace(0, 1, 5), "b": torch.zeros(5)}).picture()
    assert picture.dtype == torch.uint8 and picture.shape[0] == 3 and picture.float().std() > 0


def test_reused_curve_figure_draws_what_a_fresh_one_draws():
    epochs = [
        {"a": torch.linspace(0, 1, 5), "b": torch.zeros(5)},
        {"a": torch.linspace(3, -2, 9), "b": torch.ones(9)},
        {"b": torch.linspace(0, 5, 9)},
    ]
    reused = CurveFigure("aopc")
    for curves in epochs:
        torch.testing.assert_close(reused.render(curves).picture(), CurveFigure("aopc").render(curves).picture(),
                                   rtol=0, atol=0)


def test_file_sink_writes_png_markdown_and_csv(tmp_path):
    sink = FileSink(tmp_path)
    caption = "sample 0: label 1, prediction 2, explained class 1\nsample 1: label 0, prediction 0, explained class 0"
    sink.image("attribution/x/grid", torch.zeros(3, 4, 5, dtype=torch.uint8), step=7, epoch=1, caption=caption)
    sink.image("attribution/x/plot", torch.zeros(3, 4, 5, dtype=torch.uint8), step=7, epoch=1)
    sink.table("attribution/x/rule_map", Table.of(["a", "b"], [["1", 2]], "| a |"), step=7, epoch=1)
    from PIL import Image

    assert Image.open(tmp_path / "attribution/x/grid/epoch=001-step=000007.png").size == (5, 4)
    assert sorted(path.name for path in (tmp_path / "attribution/x/grid").iterdir()) == [
        "epoch=001-step=000007.png", "epoch=001-step=000007.txt"]
    assert (tmp_path / "attribution/x/grid/epoch=001-step=000007.txt").read_text(encoding="utf-8") == caption + "\n"
    assert [path.name for path in (tmp_path / "attribution/x/plot").iterdir()] == ["epoch=001-step=000007.png"]
    assert (tmp_path / "attribution/x/rule_map/epoch=001-step=000007.md").read_text().startswith("| a |")
    assert (tmp_path / "attribution/x/rule_map/epoch=001-step=000007.csv").read_text() == "a,b\n1,2\n"


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"composite": "nope"}, KeyError),
        ({"num_samples": 0}, ValueError),
        ({"every_n_epochs": 1.5}, ValueError),
        ({"target": "logits"}, ValueError),
        ({"target": -1}, ValueError),
        ({"metrics": [nn.Linear(2, 2)]}, TypeError),
        ({"canonizers": "magic"}, ValueError),
        ({"cmap": "no_such_cmap"}, KeyError),
        ({"samples": (torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))}, ValueError),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, error):
    with pytest.raises(error):
        AttributionCallback(**kwargs)


@pytest.mark.parametrize("enabled", [True, False])
def test_background_writer_runs_jobs_in_order_off_the_calling_thread_and_warns_on_failure(enabled):
    import pickle
    import threading

    from lrp_lightning.callbacks.attribution.background import THREAD_NAME, BackgroundWriter

    writer = BackgroundWriter(enabled)
    ran = []

    def job(index):
        def run():
            ran.append((index, threading.current_thread().name))
        return run

    def failing():
        raise OSError("disk full")

    for index in range(3):
        writer.submit(job(index))
    with pytest.warns(RuntimeWarning, match="could not write its logs: OSError: disk full"):
        writer.submit(failing)
        writer.wait()
    writer.submit(job(3))
    writer.close()
    assert [index for index, _ in ran] == [0, 1, 2, 3]
    on_worker = [name.startswith(THREAD_NAME) for _, name in ran]
    assert on_worker == [enabled] * 4
    copy = pickle.loads(pickle.dumps(writer))
    copy.submit(job(4))
    copy.close()
    assert ran[-1][0] == 4
