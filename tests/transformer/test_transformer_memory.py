"""Repeated transformer explanations keep memory flat (issue 21).

Each case explains a tiny random model twelve times, as a user's loop does (enter the attributor or
the composite's context, explain, drop everything), with the garbage collector switched off: after
two warm-up calls the live tensor bytes may grow by at most 5 % of one call's saved activations over
ten calls, no per-call rule object may survive its call, and every rule attached during a call must
be gone after it (see the ``assert_memory_flat`` fixture). The default run takes every attention
implementation, composite, mask and ``create_graph`` setting at least once per model; the full
product is ``large``.
"""
import itertools

import pytest
import torch

from lrp_lightning.attribution import Gradient
from lrp_lightning.composites import AttnLRP, CPLRP
from lrp_lightning.core import differentiable

COMPOSITES = {"attn_lrp": AttnLRP, "cp_lrp": CPLRP}
LANGUAGE_MODELS = ("bert", "gpt2", "llama")
IMPLEMENTATIONS = ("eager", "sdpa")
BATCH, LENGTH = 2, 12


def _tokens(model: torch.nn.Module, masked: bool) -> dict:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (BATCH, LENGTH), generator=generator)
    kwargs = {}
    if masked:
        mask = torch.ones(BATCH, LENGTH, dtype=torch.long)
        mask[0, -3:] = 0  # padding at the end of the first sample
        kwargs["attention_mask"] = mask
    return ids, kwargs


def _explain_tokens(model, composite_class, ids, kwargs, create_graph, rule_references):
    """One explanation of token ids: with the attributor, or (``create_graph``) through the composite's
    context on the input embeddings, the relevance a function of them (``rule_references``: the fixture)."""
    target = torch.tensor([1, 2])

    def explain_once(rule_refs):
        composite = composite_class()
        if not create_graph:
            with Gradient(model, composite) as attributor:
                rule_refs.extend(rule_references(composite))
                attributor(ids, target, **kwargs)
            return
        # as the attributors do with create_graph=True: the forward pass inside `differentiable`, so that fused
        # attention runs a kernel whose backward pass can be differentiated again
        with composite.context(model), differentiable():
            rule_refs.extend(rule_references(composite))
            embedded = model.get_input_embeddings()(ids).detach().requires_grad_()
            logits = model(inputs_embeds=embedded, **kwargs).logits
            explained = logits[:, -1] if logits.dim() == 3 else logits
            gradient, = torch.autograd.grad(explained.gather(1, target[:, None]).sum(), embedded, create_graph=True)
            # the second-order pass runs back through the rules' backward graph
            torch.autograd.grad((embedded * gradient).sum(), embedded)

    return explain_once


def _language_cases(full: bool) -> list:
    if not full:  # two cases per model, which between them take every setting once
        return [case for kind in LANGUAGE_MODELS
                for case in ((kind, "eager", "attn_lrp", False, False), (kind, "sdpa", "cp_lrp", True, True))]
    settings = itertools.product(LANGUAGE_MODELS, IMPLEMENTATIONS, COMPOSITES, [False, True], [False, True])
    return list(settings)


def _case_id(case):
    kind, implementation, name, masked, graph = case
    return f"{kind}-{implementation}-{name}-{'mask' if masked else 'nomask'}-{'graph' if graph else 'nograph'}"


@pytest.fixture
def check_language_model(tiny_language_model, assert_memory_flat, rule_references):
    """Call ``check_language_model(kind, implementation, name, masked, graph)`` to assert that repeated
    explanations of a tiny language model keep memory flat."""

    def check_language_model(kind, implementation, name, masked, graph):
        model = tiny_language_model(kind, implementation)
        ids, kwargs = _tokens(model, masked)
        assert_memory_flat(model, _explain_tokens(model, COMPOSITES[name], ids, kwargs, graph, rule_references))

    return check_language_model


@pytest.mark.parametrize("case", _language_cases(full=False), ids=_case_id)
def test_language_model_explanations_keep_memory_flat(case, check_language_model):
    check_language_model(*case)


@pytest.mark.large
@pytest.mark.parametrize("case", sorted(set(_language_cases(full=True)) - set(_language_cases(full=False))), ids=_case_id)
def test_language_model_explanations_keep_memory_flat_all_settings(case, check_language_model):
    check_language_model(*case)


@pytest.fixture
def vit(load_golden, timm_vit_from_torchvision, torchvision_vit):
    """Call ``vit(library, fused)`` for the golden ViT in torchvision or timm (``fused``: timm's fused attention)."""

    def vit(library: str, fused: bool) -> torch.nn.Module:
        golden = load_golden("vit_cp_lrp")
        if library == "timm":
            return timm_vit_from_torchvision(golden, fused_attn=fused)
        assert not fused, "torchvision's ViT runs nn.MultiheadAttention (its canonizer makes the attention explicit)"
        return torchvision_vit(golden)

    return vit


VIT_CASES = [
    (library, fused, name, graph)
    for library, fused in (("torchvision", False), ("timm", False), ("timm", True))
    for name in COMPOSITES
    for graph in (False, True)
]
# each ViT with both composites and both create_graph settings
VIT_DEFAULT_CASES = [case for case in VIT_CASES if (case[2] == "attn_lrp") != case[3]]


@pytest.mark.parametrize("library, fused, name, create_graph", VIT_DEFAULT_CASES)
def test_vit_explanations_keep_memory_flat(library, fused, name, create_graph, check_vit):
    check_vit(library, fused, name, create_graph)


@pytest.mark.large
@pytest.mark.parametrize("library, fused, name, create_graph", sorted(set(VIT_CASES) - set(VIT_DEFAULT_CASES)))
def test_vit_explanations_keep_memory_flat_all_settings(library, fused, name, create_graph, check_vit):
    check_vit(library, fused, name, create_graph)


@pytest.fixture
def check_vit(vit, load_golden, rule_references, assert_memory_flat):
    """Call ``check_vit(library, fused, name, create_graph)`` to assert that repeated ViT explanations keep
    memory flat."""

    def check_vit(library, fused, name, create_graph):
        model = vit(library, fused)
        shape = (2, *load_golden("vit_cp_lrp")["inputs"]["image"].shape[1:])
        image = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        parameters = list(model.parameters())

        def explain_once(rule_refs):
            composite = COMPOSITES[name]()
            with Gradient(model, composite, create_graph=create_graph) as attributor:
                rule_refs.extend(rule_references(composite))
                _, relevance = attributor(image, torch.tensor([0, 1]))
                if create_graph:  # the relevance is a function of the parameters: differentiate it once more
                    torch.autograd.grad(relevance.sum(), parameters, allow_unused=True)

        assert_memory_flat(model, explain_once)

    return check_vit
