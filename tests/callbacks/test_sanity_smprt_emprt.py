"""SanityCheckCallback logs sMPRT and eMPRT (Hedström et al. 2023) in a real Trainer run, read back from TensorBoard."""
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lrp_lightning.attribution import ATTRIBUTORS, Attributor, register_attributor
from lrp_lightning.callbacks import SanityCheckCallback


@pytest.fixture
def model_blind_attributor():
    """An "explainer" that ignores the model: the input itself."""

    @register_attributor("input_copy")
    class InputCopy(Attributor):
        def forward(self, inputs, target):
            with torch.no_grad():
                return self.model(inputs), inputs.clone()

    yield "input_copy"
    del ATTRIBUTORS["input_copy"]


def test_smprt_and_emprt_logged_and_separate_a_model_blind_explainer(
    tmp_path, model_blind_attributor, read_events, seeded_fit
):
    callback = SanityCheckCallback(["gradient", model_blind_attributor], every_n_epochs=1, num_samples=4, smprt_samples=2,
                                   log_images=False)
    trainer, _, _ = seeded_fit(tmp_path, [callback], logger=TensorBoardLogger(tmp_path, name="tb"))
    events = read_events(trainer.logger.log_dir)
    for name in ("gradient", model_blind_attributor):
        for key in ("smprt_last", "smprt_average", "emprt"):
            assert len(events.Scalars(f"sanity/{name}/{key}")) == 2  # 2 epochs; the fit end is the last one's step
    # an explanation that ignores the model is unchanged by randomisation: similarity 1, no complexity rise
    assert events.Scalars("sanity/input_copy/smprt_last")[-1].value == pytest.approx(1.0)
    assert events.Scalars("sanity/input_copy/smprt_average")[-1].value == pytest.approx(1.0)
    assert events.Scalars("sanity/input_copy/emprt")[-1].value == pytest.approx(0.0, abs=1e-9)
    assert events.Scalars("sanity/gradient/smprt_last")[-1].value < 0.9


def test_smprt_and_emprt_can_be_switched_off_and_bad_values_raise(tmp_path, read_events, seeded_fit):
    callback = SanityCheckCallback("gradient", num_samples=3, smprt_samples=0, emprt=False, log_images=False)
    trainer, _, _ = seeded_fit(tmp_path, [callback], logger=TensorBoardLogger(tmp_path, name="tb"))
    tags = read_events(trainer.logger.log_dir).Tags()["scalars"]
    assert "sanity/gradient/mprt_spearman" in tags
    assert not [tag for tag in tags if "smprt" in tag or "emprt" in tag]
    with pytest.raises((TypeError, ValueError), match="smprt_samples"):
        SanityCheckCallback("gradient", smprt_samples=-1)
    with pytest.raises((TypeError, ValueError), match="emprt"):
        SanityCheckCallback("gradient", emprt="yes")
