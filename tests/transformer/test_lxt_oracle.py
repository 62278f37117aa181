"""AttnLRP and CP-LRP against LXT 2.1, the AttnLRP authors' reference implementation.

LXT runs in its own virtualenv with transformers 4.52.4 (``make golden``, scripts/make_lxt_golden.py)
and wrote tests/golden/*.pt: tiny random float64 models, their inputs, the explained targets and
LXT's logits and relevance, for the eager and the SDPA attention implementation. Here each model is
rebuilt with the installed transformers, explained with our composites (canonizers="auto"), and
compared: relevance to a relative error (max |ours - LXT| / max |LXT|) of at most 1e-6, logits to
float64 precision. LXT's linear layers carry no stabiliser (LRP-0), so ours run with epsilon 1e-10;
its ViT recipe puts zennit's Epsilon(1e-9) on Linear/Conv2d, but not on the projections inside
nn.MultiheadAttention (plain linear maps there), so ours run with epsilon 1e-9 everywhere.
"""
import pytest
import torch

from lrp_lightning.attribution import Gradient
from lrp_lightning.composites import AttnLRP, CPLRP

COMPOSITES = {"attn_lrp": AttnLRP, "cp_lrp": CPLRP}


def test_golden_files_cover_the_issue(golden_cases, load_golden):
    """Every model/method pair the issue names has a golden file, with both attention implementations."""
    assert set(golden_cases) == {
        "vit_cp_lrp", "bert_attn_lrp", "gpt2_attn_lrp", "gpt2_cp_lrp", "llama_attn_lrp", "llama_cp_lrp",
    }
    for name in golden_cases:
        golden = load_golden(name)
        assert golden["versions"]["transformers"] == "4.52.4" and golden["versions"]["lxt"] == "2.1"
        expected = {"torchvision"} if name.startswith("vit") else {"eager", "sdpa"}
        assert set(golden["results"]) == expected
    llama = load_golden("llama_attn_lrp")["config"]
    assert llama["num_key_value_heads"] < llama["num_attention_heads"], "grouped-query attention is covered"


def test_language_model_matches_lxt(
    golden_language_case, golden_language_model, load_golden, relative_error, token_relevance
):
    name, implementation = golden_language_case
    golden = load_golden(name)
    expected = golden["results"][implementation]
    model = golden_language_model(golden, implementation)
    composite = COMPOSITES[golden["method"]](epsilon=golden["epsilon"])
    logits, relevance, _ = token_relevance(
        model, composite, golden["inputs"], expected["target"], last_position=golden["model"] != "bert"
    )
    assert relative_error(logits, expected["logits"]) < 1e-12
    assert relative_error(relevance, expected["relevance"]) < 1e-6
    # the public API on token ids: the same relevance, with either attention implementation (to 1e-12 for
    # the same one; across them up to the ratio S / stab(S) at Q K^T that the fused kernel cannot apply,
    # a difference of the order of epsilon / |S|, and the kernels' rounding)
    model_kwargs = {key: value for key, value in golden["inputs"].items() if key != "input_ids"}
    for implementation_used in ("eager", "sdpa"):
        with Gradient(golden_language_model(golden, implementation_used), composite) as attributor:
            output, token_relevance_api = attributor(golden["inputs"]["input_ids"], expected["target"], **model_kwargs)
        tolerance = 1e-12 if implementation_used == implementation else 1e-9
        assert relative_error(token_relevance_api, relevance) < tolerance
        explained = expected["logits"] if golden["model"] == "bert" else expected["logits"][:, -1]
        assert relative_error(output, explained) < 1e-12


def test_torchvision_vit_matches_lxt(image_relevance, load_golden, relative_error, torchvision_vit):
    golden = load_golden("vit_cp_lrp")
    expected = golden["results"]["torchvision"]
    logits, relevance = image_relevance(
        torchvision_vit(golden), CPLRP(epsilon=golden["epsilon"]), golden["inputs"]["image"], expected["target"]
    )
    assert relative_error(logits, expected["logits"]) < 1e-12
    assert relative_error(relevance, expected["relevance"]) < 1e-6


@pytest.mark.parametrize("fused_attn", [True, False])
def test_timm_vit_with_the_same_weights_matches_lxt(
    fused_attn, image_relevance, load_golden, relative_error, timm_vit_from_torchvision
):
    """timm's ViT holding the torchvision ViT's weights gets LXT's relevance of the torchvision ViT."""
    golden = load_golden("vit_cp_lrp")
    expected = golden["results"]["torchvision"]
    model = timm_vit_from_torchvision(golden, fused_attn=fused_attn)
    logits, relevance = image_relevance(
        model, CPLRP(epsilon=golden["epsilon"]), golden["inputs"]["image"], expected["target"]
    )
    assert relative_error(logits, expected["logits"]) < 1e-12
    assert relative_error(relevance, expected["relevance"]) < 1e-6
    assert all(module.fused_attn is fused_attn for module in model.modules() if hasattr(module, "fused_attn"))
