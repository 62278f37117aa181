"""Repeated explanations with the seed's CNN composites keep memory flat (issue 21).

As for the transformers (tests/transformer/test_transformer_memory.py): twelve calls, each entering
the attributor, explaining a batch and leaving, with the garbage collector off; after two warm-up
calls the live tensor bytes may grow by at most 5 % of one call's saved activations over ten calls,
and every rule attached during a call is gone after it (the ``assert_memory_flat`` fixture).
"""
import pytest
import torch

from lrp_lightning.attribution import Gradient, IntegratedGradients, SmoothGrad
from lrp_lightning.canonizers import SequentialMergeBatchNorm
from lrp_lightning.composites import COMPOSITES, EpsilonGammaBox

pytestmark = pytest.mark.filterwarnings("ignore:no rule covers these layers")

CNN_COMPOSITES = sorted(name for name in COMPOSITES if name not in ("attn_lrp", "cp_lrp"))


def _composite(name: str, canonizers: list):
    if name == "epsilon_gamma_box":
        return EpsilonGammaBox(low=-3.0, high=3.0, canonizers=canonizers)
    return COMPOSITES[name](canonizers=canonizers)


@pytest.fixture
def explain_repeatedly(assert_memory_flat, rule_references):
    """Call ``explain_repeatedly(model, input, make_composite, attributor, **options)`` to assert that repeated
    explanations keep memory flat."""

    def explain_repeatedly(model, input, make_composite, attributor=Gradient, **options):
        target = torch.arange(input.shape[0]) % 5

        def explain_once(rule_refs):
            composite = make_composite()
            with attributor(model, composite, **options) as explain:
                rule_refs.extend(rule_references(composite))
                _, relevance = explain(input, target)
                # with create_graph the relevance may be a function of the parameters (whether it is, for each
                # rule, is the second-order tests' concern): differentiate it once more, as a training loss would
                if options.get("create_graph") and relevance.requires_grad:
                    torch.autograd.grad(relevance.sum(), list(model.parameters()), allow_unused=True)

        assert_memory_flat(model, explain_once)

    return explain_repeatedly


@pytest.mark.parametrize("create_graph", [False, True])
@pytest.mark.parametrize("name", CNN_COMPOSITES)
def test_cnn_composite_explanations_keep_memory_flat(name, create_graph, cnn_with_batch_norm, explain_repeatedly):
    model = cnn_with_batch_norm()
    input = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    explain_repeatedly(model, input, lambda: _composite(name, [SequentialMergeBatchNorm()]), create_graph=create_graph)


@pytest.mark.large
def test_resnet_explanations_keep_memory_flat(resnet_bottleneck, explain_repeatedly):
    from lrp_lightning.torchvision import ResNetCanonizer

    model = resnet_bottleneck()
    input = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    explain_repeatedly(model, input, lambda: _composite("epsilon_gamma_box", [ResNetCanonizer()]))


@pytest.mark.parametrize(
    "attributor, options",
    [(SmoothGrad, {"n_iter": 3, "noise_level": 0.1}), (IntegratedGradients, {"n_iter": 3})],
    ids=["smooth_grad", "integrated_gradients"],
)
def test_path_attributors_keep_memory_flat(attributor, options, cnn_with_batch_norm, explain_repeatedly):
    model = cnn_with_batch_norm()
    input = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    explain_repeatedly(
        model, input, lambda: _composite("epsilon_plus", [SequentialMergeBatchNorm()]), attributor, **options
    )
