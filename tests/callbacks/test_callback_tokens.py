"""Token inputs in the callback: samples from text batches, decoding, the token heatmap and table."""
import re

import pytest
import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from lrp_lightning.callbacks import AttributionCallback
from lrp_lightning.callbacks.explainers import build_explainer
from lrp_lightning.callbacks.metric_set import default_metrics
from lrp_lightning.callbacks.samples import Samples, collect_samples
from lrp_lightning.callbacks.tokens import TOKEN_IMAGE_WIDTH, TokenDecoder, run_model, token_pictures, token_table
from lrp_lightning.demo.text_data import (
    KEYWORDS,
    SEQUENCE_LENGTH,
    SOURCE_TAGS,
    ShortcutTextDataModule,
    TextDataset,
    Vocabulary,
    generate_text_split,
)
from lrp_lightning.demo.text_model import TinyTextTransformer
from lrp_lightning.metrics import RegionPerturbation

SEED = 7


class ConvertingTokenizer:
    pad_token_id = 7

    def convert_ids_to_tokens(self, ids):
        return [f"w{index}" for index in ids]


class DecodingTokenizer:
    def decode(self, ids):
        return "".join(f"<{index}>" for index in ids)


def test_decoder_prefers_convert_ids_to_tokens_then_decode_then_ids():
    assert TokenDecoder(ConvertingTokenizer())([3, 4]) == ["w3", "w4"]
    assert TokenDecoder(DecodingTokenizer())([3, 4]) == ["<3>", "<4>"]
    assert TokenDecoder(decode=lambda index: chr(ord("a") + index))([0, 2]) == ["a", "c"]
    assert TokenDecoder()([5, 6]) == ["5", "6"]
    assert TokenDecoder(ConvertingTokenizer()).pad_token_id == 7 and TokenDecoder().pad_token_id is None


def test_decoder_rejects_ambiguous_or_unusable_arguments():
    with pytest.raises(ValueError, match="either tokenizer= or decode="):
        TokenDecoder(ConvertingTokenizer(), decode=str)
    with pytest.raises(TypeError, match="neither convert_ids_to_tokens nor decode"):
        TokenDecoder(object())
    with pytest.raises(TypeError, match="decode must be a callable"):
        TokenDecoder(decode="abc")


def test_text_batches_give_token_samples_with_their_attention_mask_and_state():
    split = generate_text_split(10, seed=0, shortcut_strength=1.0)
    samples = collect_samples(DataLoader(TextDataset(split), batch_size=4), 6)
    assert samples.is_tokens and samples.inputs.dtype == torch.long
    assert torch.equal(samples.inputs, split.input_ids[:6])
    assert torch.equal(samples.attention_mask, split.attention_mask[:6])
    assert torch.equal(samples.labels, split.labels[:6])
    restored = Samples(**samples.state_dict())
    assert torch.equal(restored.attention_mask, samples.attention_mask)
    assert torch.equal(samples.head(2).attention_mask, split.attention_mask[:2])


def test_an_attention_mask_must_match_token_ids():
    with pytest.raises(ValueError, match="attention_mask needs integer token ids of its shape"):
        Samples(torch.zeros(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="attention_mask needs integer token ids"):
        Samples(torch.zeros(2, 5), attention_mask=torch.ones(2, 5))


def test_run_model_passes_the_attention_mask_and_reads_logits():
    class Output:
        def __init__(self, logits):
            self.logits = logits

    seen = {}

    def model(input_ids, attention_mask=None):
        seen["mask"] = attention_mask
        return Output(torch.arange(24.0).view(2, 3, 4))

    attention_mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    scores = run_model(model, torch.zeros(2, 3, dtype=torch.long), attention_mask)
    logits = torch.arange(24.0).view(2, 3, 4)
    assert torch.equal(scores, torch.stack([logits[0, 2], logits[1, 1]])) and seen["mask"] is attention_mask


def test_default_metrics_for_token_ids_replace_single_tokens_by_the_baseline_token():
    metrics = default_metrics(torch.zeros(2, 5, dtype=torch.long), baseline_token_id=3)
    perturbation = metrics["aopc_morf"]
    assert isinstance(perturbation, RegionPerturbation)
    assert (perturbation.patch_size, perturbation.steps, perturbation.baseline) == (1, 5, 3)


def test_token_table_leaves_out_padding_bolds_the_top_token_and_escapes_markdown():
    input_ids = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    attention_mask = (input_ids != 0).long()
    relevance = torch.tensor([[0.1, -0.5, 0.25, 9.0], [0.0, 2.0, 5.0, 5.0]])
    decoder = TokenDecoder(decode=lambda index: {1: "a|b", 2: "not", 3: "good", 4: "x", 5: "*y*"}.get(index, "[PAD]"))
    _, table = token_pictures(decoder, input_ids, relevance, attention_mask, torch.tensor([1, 0]), "coldnhot")
    rows = table.markdown.splitlines()
    assert len(rows) == 4 and "[PAD]" not in table.markdown
    assert table.rows[0][:3] == (0, 1, "good") and table.rows[1][2] == "*y*"
    assert rows[2].startswith("| 0 | 1 | good |") and "**good (+0.50)**" in rows[2] and "a\\|b (+0.20)" in rows[2]
    assert rows[3].startswith("| 1 | 0 | \\*y\\* |") and "**\\*y\\* (+1.00)**" in rows[3]


def test_token_heatmap_ignores_padding_entirely():
    """A padded batch draws exactly what the same tokens without padding draw."""
    split = generate_text_split(3, seed=2, shortcut_strength=0.0)
    relevance = torch.randn(3, SEQUENCE_LENGTH, generator=torch.Generator().manual_seed(0))
    decoder = TokenDecoder(Vocabulary())
    targets = split.labels
    padded_image, padded_table = token_pictures(decoder, split.input_ids, relevance, split.attention_mask, targets, "coldnhot")
    garbage = relevance.masked_fill(split.attention_mask == 0, 100.0)
    image, table = token_pictures(decoder, split.input_ids, garbage, split.attention_mask, targets, "coldnhot")
    assert torch.equal(image, padded_image) and table == padded_table
    assert image.dtype == torch.uint8 and image.shape[0] == 3 and image.shape[2] == TOKEN_IMAGE_WIDTH
    first = token_pictures(decoder, split.input_ids[:1, : int(split.attention_mask[0].sum())], relevance[:1, : int(split.attention_mask[0].sum())], None, targets[:1], "coldnhot")
    alone = token_pictures(decoder, split.input_ids[:1], relevance[:1], split.attention_mask[:1], targets[:1], "coldnhot")
    assert torch.equal(first[0], alone[0])


def test_token_heatmap_colours_positive_relevance_warm_and_negative_cold():
    image, _ = token_pictures(
        TokenDecoder(decode=lambda index: "WWWW"), torch.tensor([[1, 2]]), torch.tensor([[1.0, -1.0]]), None,
        torch.tensor([0]), "coldnhot",
    )
    pixels = image.permute(1, 2, 0).reshape(-1, 3).long()
    warm = ((pixels[:, 0] > 200) & (pixels[:, 2] < 80)).sum()
    cold = ((pixels[:, 2] > 200) & (pixels[:, 0] < 80)).sum()
    assert warm > 50 and cold > 50


def test_text_data_plants_the_shortcut_only_where_asked():
    vocabulary = Vocabulary()
    train = generate_text_split(400, seed=0, shortcut_strength=1.0)
    validation = generate_text_split(400, seed=1, shortcut_strength=0.0)
    rows = torch.arange(400)
    for split in (train, validation):
        keyword_groups = [[vocabulary.ids[word] for word in group] for group in KEYWORDS]
        keywords = split.input_ids[rows, split.keyword_positions]
        assert all(int(k) in keyword_groups[int(label)] for k, label in zip(keywords, split.labels))
        assert ((split.input_ids == vocabulary.pad_token_id) == (split.attention_mask == 0)).all()
    tag_class = lambda split: (split.input_ids[rows, split.tag_positions] == vocabulary.ids[SOURCE_TAGS[1]]).long()
    assert torch.equal(tag_class(train), train.labels)
    agreement = (tag_class(validation) == validation.labels).float().mean()
    assert 0.4 < agreement < 0.6
    assert token_table([[("x", 1.0)]], [0]).count("\n") == 2


@pytest.fixture(scope="module")
def fit_text(make_trainer, rng_states):
    """Call ``fit_text(tmp_path, callbacks, max_epochs, ckpt_path, **trainer_options)`` for a seeded fit of a tiny
    text transformer on the built-in text data; returns (trainer, model, rng)."""

    def fit_text(tmp_path, callbacks, max_epochs=2, ckpt_path=None, **kwargs):
        """Seeded fit of a tiny text transformer on the built-in text data; returns (trainer, model, rng)."""
        seed_everything(SEED)
        data = ShortcutTextDataModule(n_train=64, n_val=24, batch_size=16, seed=3)
        model = TinyTextTransformer(len(Vocabulary()), SEQUENCE_LENGTH, dim=16, num_layers=1)
        trainer = make_trainer(tmp_path, callbacks, max_epochs=max_epochs, **kwargs)
        trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
        return trainer, model, rng_states()

    return fit_text


@pytest.fixture(scope="module")
def text_baseline(tmp_path_factory, fit_text):
    _, model, rng = fit_text(tmp_path_factory.mktemp("text_baseline"), [])
    return {key: value.clone() for key, value in model.state_dict().items()}, rng


def test_text_model_logs_token_heatmaps_and_tables_and_trains_bitwise_as_without(
    tmp_path, text_baseline, assert_rng_equal, read_events, fit_text
):
    weights, rng = text_baseline
    callback = AttributionCallback(["attn_lrp", "cp_lrp", "gradient"], num_samples=5, tokenizer=Vocabulary())
    trainer, model, rng_after = fit_text(tmp_path, [callback], logger=TensorBoardLogger(tmp_path, name="tb"))
    for key, value in weights.items():
        assert torch.equal(value, model.state_dict()[key]), key
    assert_rng_equal(rng, rng_after)

    split = generate_text_split(24, seed=4, shortcut_strength=0.0)
    assert torch.equal(callback.samples.inputs, split.input_ids[:5])
    assert torch.equal(callback.samples.attention_mask, split.attention_mask[:5])
    events = read_events(trainer.logger.log_dir)
    words = Vocabulary().convert_ids_to_tokens
    for name in ("attn_lrp", "cp_lrp", "gradient"):
        images = events.Images(f"attribution/{name}/grid")
        assert len(images) == 2 and images[0].width == TOKEN_IMAGE_WIDTH
        for metric in ("sparseness", "complexity", "aopc_morf"):
            assert len(events.Scalars(f"attribution/{name}/{metric}")) == 2
        table = events.Tensors(f"attribution/{name}/tokens/text_summary")[-1].tensor_proto.string_val[0].decode()
        rows = table.splitlines()[2:]
        assert len(rows) == 5 and "[PAD]" not in table
        for row, ids, mask in zip(rows, split.input_ids, split.attention_mask):
            cells = re.findall(r"(\S+) \([+-]\d\.\d\d\)", row.split(" | ")[3])
            shown = [cell.lstrip("*").replace("\\", "") for cell in cells]
            assert shown == words(ids[mask.bool()].tolist()), row
    assert "attribution/cp_lrp/conservation" in trainer.callback_metrics

    # the logged aopc of the last epoch is what the metric gives on the final weights
    from lrp_lightning.attribution import Gradient
    from lrp_lightning.composites import COMPOSITES
    with Gradient(model.eval(), COMPOSITES["attn_lrp"]()) as attributor:
        _, relevance = attributor(split.input_ids[:5], split.labels[:5], attention_mask=split.attention_mask[:5])
    metric = RegionPerturbation(patch_size=1, steps=8, baseline=Vocabulary().pad_token_id)
    metric.update(model, split.input_ids[:5], relevance, split.labels[:5], attention_mask=split.attention_mask[:5])
    logged = events.Scalars("attribution/attn_lrp/aopc_morf")[-1].value
    assert logged == pytest.approx(float(metric.compute()["aopc"]), rel=1e-4, abs=1e-6)


def test_text_samples_survive_a_checkpoint_and_decode_callable_and_ids_work(tmp_path, read_events, fit_text):
    first = AttributionCallback("attn_lrp", num_samples=3, decode=lambda index: f"t{index}")
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit_text(tmp_path, [first, checkpoint], max_epochs=1, enable_checkpointing=True)
    resumed = AttributionCallback("attn_lrp", num_samples=3, log_images=True)
    trainer, _, _ = fit_text(
        tmp_path, [resumed], max_epochs=2, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"),
        logger=TensorBoardLogger(tmp_path, name="resumed"),
    )
    assert torch.equal(resumed.samples.inputs, first.samples.inputs)
    assert torch.equal(resumed.samples.attention_mask, first.samples.attention_mask)
    table = read_events(trainer.logger.log_dir).Tensors("attribution/attn_lrp/tokens/text_summary")[-1]
    first_id = int(first.samples.inputs[0, 0])
    assert f"| 0 | {int(first.samples.labels[0])} |" in table.tensor_proto.string_val[0].decode()
    assert f" {first_id} (" in table.tensor_proto.string_val[0].decode()


def test_box_bounds_are_not_inferred_from_token_ids(tmp_path, fit_text):
    callback = AttributionCallback("epsilon_gamma_box", num_samples=2)
    trainer, _, _ = fit_text(tmp_path, [callback], max_epochs=1)
    assert "attribution/epsilon_gamma_box/sparseness" in trainer.callback_metrics

    class WithConvolution(TinyTextTransformer):
        def __init__(self):
            super().__init__(len(Vocabulary()), SEQUENCE_LENGTH, dim=16, num_layers=1)
            self.mixer = torch.nn.Conv1d(16, 16, 1)

    with pytest.raises(ValueError, match="give low=... and high="):
        build_explainer("box", "epsilon_gamma_box", WithConvolution(), torch.zeros(2, 4, dtype=torch.long))
