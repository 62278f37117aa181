"""Conditional attributions equal zennit-crp 0.6.0's (called as a black-box oracle) in float64.

zennit-crp is installed with ``pip install --no-deps zennit-crp==0.6.0`` (its pins predate torch 2); the
tests skip without it.
"""
import copy

import pytest
import torch

crp_attribution = pytest.importorskip("crp.attribution")
crp_concepts = pytest.importorskip("crp.concepts")
zennit_composites = pytest.importorskip("zennit.composites")
zennit_canonizers = pytest.importorskip("zennit.canonizers")
zennit_layer = pytest.importorskip("zennit.layer")

from lrp_lightning import canonizers, composites  # noqa: E402
from lrp_lightning.concepts import AttributionResults, ChannelConcept, CondAttribution  # noqa: E402


pytestmark = pytest.mark.usefixtures("float64_default")
TOLERANCE = 1e-6
COMPOSITES = ["epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box"]


@pytest.fixture
def crp_residual_cnn(randomize_batch_norms, residual_cnn, residual_sum_class):
    """Call for the residual CNN with sums that both composites map (ours and zennit's), randomised BatchNorms."""

    def build():
        torch.manual_seed(3)
        return randomize_batch_norms(residual_cnn(residual_sum_class(zennit_layer.Sum))).eval()

    return build


# model fixture, input shape, record layers, conditions (zennit-crp wants the layers of a condition last to
# first), BatchNorm canonizers for the model (zennit's, ours)
CASES = {
    "cnn_bn": (
        "cnn_with_batch_norm", (3, 12, 12), ["0", "3", "6", "11", "13"],
        [{"y": [1], "6": [0, 2]}, {"y": [3], "6": [3], "3": [1, 4, 5]}, {"y": [0]}, {"y": [2, 4], "11": [7]}],
        lambda model: [zennit_canonizers.SequentialMergeBatchNorm()],
        lambda model: [canonizers.SequentialMergeBatchNorm()],
    ),
    "residual": (
        "crp_residual_cnn", (3, 8, 8),
        ["stem", "block1.conv1", "block1.conv2", "block1.sum", "block2.conv2", "block2.shortcut", "fc"],
        [{"y": [2], "block2.conv2": [1, 4]}, {"y": [0], "block2.conv2": [0], "block1.conv1": [2, 3]},
         {"y": [1], "block1.sum": [5]}, {"y": [3]}],
        lambda model: [zennit_canonizers.NamedMergeBatchNorm(model.merge_pairs())],
        lambda model: [canonizers.NamedMergeBatchNorm(model.merge_pairs())],
    ),
    "mlp": (
        "mlp", (10,), ["0", "2", "4"],
        [{"y": [1], "2": [0, 5, 7]}, {"y": [3], "2": [11], "0": [1, 2, 3]}, {"y": [0, 2]}],
        lambda model: [], lambda model: [],
    ),
}


def composite_pair(name, inputs, zennit_canonizer, our_canonizer):
    kwargs = {}
    if name == "epsilon_gamma_box":
        reduce = (0, *range(2, inputs.dim()))
        kwargs = {"low": inputs.amin(dim=reduce, keepdim=True).expand_as(inputs[:1]) - 0.5,
                  "high": inputs.amax(dim=reduce, keepdim=True).expand_as(inputs[:1]) + 0.5}
    return (zennit_composites.COMPOSITES[name](canonizers=zennit_canonizer, **kwargs),
            composites.COMPOSITES[name](canonizers=our_canonizer, **kwargs))


def assert_close(actual, expected):
    scale = expected.abs().max().clamp_min(1e-12)
    error = ((actual - expected).abs().max() / scale).item()
    assert error < TOLERANCE, f"relative max error {error:.3e}"


def run_both(request, case, composite_name, exclude_parallel, samples=2):
    model_fixture, shape, record, conditions, zennit_canonizer, our_canonizer = CASES[case]
    model = request.getfixturevalue(model_fixture)()
    generator = torch.Generator().manual_seed(11)
    inputs = torch.randn(samples, *shape, generator=generator)
    theirs, ours = composite_pair(composite_name, inputs, zennit_canonizer(model), our_canonizer(model))
    oracle = crp_attribution.CondAttribution(copy.deepcopy(model))
    if exclude_parallel:
        # zennit-crp runs the conditions of each set of layers on their own and returns them set by set
        # (pairing N samples with a set of N conditions): call it per condition, then order the rows as
        # ours, sample-major
        parts = [oracle(inputs.clone().requires_grad_(True), [condition], theirs, record_layer=record)
                 for condition in conditions]
        expected = interleaved(parts)
    else:
        expected = oracle(inputs.clone().requires_grad_(True), conditions, theirs, record_layer=record,
                          exclude_parallel=False)
    actual = CondAttribution(model)(inputs, conditions, ours, record_layer=record, exclude_parallel=exclude_parallel)
    return conditions, record, expected, actual


def interleaved(parts):
    """Results of one call per condition (each ``N`` rows) as rows ``i * C + j`` (sample ``i``, condition ``j``)."""
    def stack(tensors):
        return torch.stack(tensors, dim=1).flatten(0, 1)

    return AttributionResults(
        heatmap=stack([part.heatmap for part in parts]),
        activations={name: stack([part.activations[name] for part in parts]) for name in parts[0].activations},
        relevances={name: stack([part.relevances[name] for part in parts]) for name in parts[0].relevances},
        prediction=stack([part.prediction for part in parts]),
    )


def oracle_relevance(expected, conditions, layer, exclude_parallel):
    """zennit-crp's recorded relevance of ``layer``. Under torch 2, zennit-crp 0.6.0 records twice the masked
    relevance at the conditioned layers of a chained (exclude_parallel=True) pass: its heatmaps and the
    relevance below those layers (the masked relevance is what flows on) agree with the masked relevance,
    so the factor is taken out here."""
    relevance = expected.relevances[layer].clone()
    if exclude_parallel:
        rows = [row for row in range(len(relevance)) if layer in conditions[row % len(conditions)]]
        relevance[rows] /= 2
    return relevance


@pytest.mark.parametrize("exclude_parallel", [True, False], ids=["exclude_parallel", "single_pass"])
@pytest.mark.parametrize("composite_name", COMPOSITES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_concepts_conditional_attribution_matches_zennit_crp(request, case, composite_name, exclude_parallel):
    conditions, record, expected, actual = run_both(request, case, composite_name, exclude_parallel)
    assert actual.heatmap.shape == expected.heatmap.shape == (2 * len(conditions), *expected.heatmap.shape[1:])
    assert_close(actual.heatmap, expected.heatmap)
    assert_close(actual.prediction, expected.prediction)
    concept = ChannelConcept()
    oracle_concept = crp_concepts.ChannelConcept()
    for layer in record:
        assert_close(actual.activations[layer], expected.activations[layer])
        relevance = oracle_relevance(expected, conditions, layer, exclude_parallel)
        assert_close(actual.relevances[layer], relevance)
        if relevance.dim() >= 2 and relevance.abs().sum(dim=tuple(range(1, relevance.dim()))).min() > 0:
            for abs_norm in (True, False):
                assert_close(concept.attribute(actual.relevances[layer], abs_norm=abs_norm),
                             oracle_concept.attribute(relevance, abs_norm=abs_norm))


def test_concepts_one_sample_under_several_conditions_matches_zennit_crp(request):
    conditions, _, expected, actual = run_both(request, "residual", "epsilon_plus", True, samples=1)
    assert actual.heatmap.shape[0] == len(conditions)
    assert_close(actual.heatmap, expected.heatmap)


@pytest.mark.parametrize("samples", [2, 3], ids=["every_sample_every_condition", "paired"])
def test_concepts_conditions_broadcast_over_the_batch_as_zennit_crp(samples, crp_residual_cnn):
    # one set of conditioned layers: zennit-crp answers all conditions in one call
    model = crp_residual_cnn()
    conditions = [{"y": [0], "block2.conv2": [1]}, {"y": [2], "block2.conv2": [0, 3]}, {"y": [1], "block2.conv2": [5]}]
    inputs = torch.randn(samples, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    zennit_canonizer, our_canonizer = CASES["residual"][-2:]
    theirs, ours = composite_pair("epsilon_plus", inputs, zennit_canonizer(model), our_canonizer(model))
    expected = crp_attribution.CondAttribution(copy.deepcopy(model))(inputs.clone().requires_grad_(True), conditions, theirs)
    actual = CondAttribution(model)(inputs, conditions, ours)
    assert actual.heatmap.shape[0] == (3 if samples == 3 else 6)
    assert_close(actual.heatmap, expected.heatmap)


# start_layer / init_rel: per case the start layer, conditions on it and below it (no "y": it has no effect there),
# a layer above it to record (zero relevance), and the composite
START_CASES = {
    "cnn_bn": ("6", [{"6": [1, 3]}, {"3": [0, 2, 5]}, {"6": [2], "3": [4]}], ["3", "6", "11"], "epsilon_plus"),
    "residual": ("block2.sum", [{"block2.sum": [1, 4]}, {"block2.conv2": [0, 3]}, {"block2.sum": [5], "block1.sum": [0, 1]}],
                 ["stem", "block1.sum", "block2.conv2", "block2.sum", "fc"], "epsilon_gamma_box"),
    "mlp": ("2", [{"2": [0, 5, 7]}, {"0": [1, 2, 3]}, {"2": [11], "0": [4, 5]}], ["0", "2", "4"], "epsilon_plus_flat"),
}


def init_rel_of(kind, shape, rows):
    """The init_rel of each kind, for start values of one row's ``shape`` and ``rows`` explained rows."""
    if kind == "callable":
        return lambda values: values.abs() + 0.5
    if kind == "tensor":
        return torch.randn(rows, *shape, generator=torch.Generator().manual_seed(7))
    return {"none": None, "number": 3}[kind]  # zennit-crp 0.6.0 fills with an int only (a float: ignored)


def oracle_rows(init_rel, condition, conditions):
    """The part of a per-row init_rel tensor zennit-crp gets when called with one condition (rows ``i * C + j``)."""
    if isinstance(init_rel, torch.Tensor):
        return init_rel[conditions.index(condition)::len(conditions)]
    return init_rel


def run_both_from(request, case, start_layer, conditions, record, composite_name, init_rel, exclude_parallel,
                  samples=2):
    model_fixture, shape, _, _, zennit_canonizer, our_canonizer = CASES[case]
    torch.manual_seed(0)  # the same model in every call
    model = request.getfixturevalue(model_fixture)()
    inputs = torch.randn(samples, *shape, generator=torch.Generator().manual_seed(11))
    theirs, ours = composite_pair(composite_name, inputs, zennit_canonizer(model), our_canonizer(model))
    oracle = crp_attribution.CondAttribution(copy.deepcopy(model))
    call = dict(record_layer=record, start_layer=start_layer, exclude_parallel=exclude_parallel)
    if exclude_parallel:
        expected = interleaved([oracle(inputs.clone().requires_grad_(True), [condition], theirs,
                                       init_rel=oracle_rows(init_rel, condition, conditions), **call)
                                for condition in conditions])
    else:
        expected = oracle(inputs.clone().requires_grad_(True), conditions, theirs, init_rel=init_rel, **call)
    actual = CondAttribution(model)(inputs, conditions, ours, init_rel=init_rel, **call)
    return expected, actual


def assert_same_results(expected, actual, conditions, record, start_layer, exclude_parallel):
    assert actual.heatmap.shape == expected.heatmap.shape
    assert_close(actual.heatmap, expected.heatmap)
    assert_close(actual.prediction, expected.prediction)
    for layer in record:
        assert_close(actual.activations[layer], expected.activations[layer])
        relevance = oracle_relevance(expected, conditions, layer, exclude_parallel and layer != start_layer)
        if relevance.abs().max() == 0:  # above the start layer: no relevance in either
            assert actual.relevances[layer].abs().max() == 0
        else:
            assert_close(actual.relevances[layer], relevance)


@pytest.mark.parametrize("exclude_parallel", [True, False], ids=["exclude_parallel", "single_pass"])
@pytest.mark.parametrize("init_kind", ["none", "callable", "tensor", "number"])
@pytest.mark.parametrize("case", sorted(START_CASES))
def test_concepts_start_layer_and_init_rel_match_zennit_crp(request, case, init_kind, exclude_parallel):
    start_layer, conditions, record, composite_name = START_CASES[case]
    model_fixture, shape = CASES[case][:2]
    build = request.getfixturevalue(model_fixture)
    start_shape = CondAttribution(build())(torch.zeros(1, *shape), {"y": [0]}, record_layer=[start_layer]) \
        .activations[start_layer].shape[1:]
    init_rel = init_rel_of(init_kind, start_shape, 2 * len(conditions))
    expected, actual = run_both_from(request, case, start_layer, conditions, record, composite_name, init_rel,
                                     exclude_parallel)
    assert actual.heatmap.shape[0] == 2 * len(conditions)
    assert_same_results(expected, actual, conditions, record, start_layer, exclude_parallel)


@pytest.mark.parametrize("init_kind", ["callable", "tensor", "number"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_concepts_init_rel_at_the_output_matches_zennit_crp(request, case, init_kind):
    _, _, record, conditions, _, _ = CASES[case]
    classes = {"cnn_bn": 5, "residual": 4, "mlp": 4}[case]
    # with "y" the initial relevance is kept on those classes; without, on every class
    conditions = conditions + [{key: value for key, value in conditions[0].items() if key != "y"}]
    init_rel = init_rel_of(init_kind, (classes,), 2 * len(conditions))
    expected, actual = run_both_from(request, case, None, conditions, record, "epsilon_plus", init_rel, True)
    assert_same_results(expected, actual, conditions, record, None, True)


def test_concepts_y_with_start_layer_has_no_effect_and_warns_as_zennit_crp(request):
    start_layer, conditions, record, composite_name = START_CASES["mlp"]
    with_y = [{"y": [3], **condition} for condition in conditions]
    with pytest.warns(UserWarning, match="'y' has no effect"):
        expected, actual = run_both_from(request, "mlp", start_layer, with_y, record, composite_name, None, True)
    assert_same_results(expected, actual, with_y, record, start_layer, True)
    _, plain = run_both_from(request, "mlp", start_layer, conditions, record, composite_name, None, True)
    torch.testing.assert_close(actual.heatmap, plain.heatmap, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_concepts_on_device_moves_the_results_as_zennit_crp(request):
    start_layer, conditions, record, composite_name = START_CASES["residual"]
    model_fixture, shape, _, _, zennit_canonizer, our_canonizer = CASES["residual"]
    model = request.getfixturevalue(model_fixture)().cuda()
    inputs = torch.randn(2, *shape, generator=torch.Generator().manual_seed(11)).cuda()
    theirs, ours = composite_pair(composite_name, inputs, zennit_canonizer(model), our_canonizer(model))
    expected = crp_attribution.CondAttribution(copy.deepcopy(model))(
        inputs.clone().requires_grad_(True), conditions[:1], theirs, record_layer=record, start_layer=start_layer,
        on_device="cpu")
    actual = CondAttribution(model)(inputs, conditions[:1], ours, record_layer=record, start_layer=start_layer,
                                    on_device="cpu")
    for tensor in [actual.heatmap, actual.prediction, *actual.relevances.values(), *actual.activations.values()]:
        assert tensor.device.type == "cpu"
    assert expected.heatmap.device.type == "cpu"
    assert_close(actual.heatmap, expected.heatmap)
