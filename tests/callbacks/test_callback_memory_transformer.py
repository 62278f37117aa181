"""Twenty explained epochs of the three callbacks with AttnLRP on a small vision transformer keep the
process's tensor memory flat (issue 21; tests/test_long_run_memory.py is the CNN version).

A real Trainer run: ``AttributionCallback("attn_lrp")``, ``SanityCheckCallback("attn_lrp")`` and
``RelevanceClusterCallback("attn_lrp")`` explain at every epoch of a torchvision ViT (one encoder
layer, 8x8 images). After the warm-up epochs and after the last one the live tensors (collected
garbage excluded, each storage counted once) and the per-call rule objects are counted: the bytes
may grow by at most 5 % of one explanation's saved activations in between, and no per-call rule
object may be alive.
"""
import gc

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, seed_everything

from lrp_lightning.attribution import Gradient
from lrp_lightning.callbacks import AttributionCallback, RelevanceClusterCallback, SanityCheckCallback
from lrp_lightning.composites import AttnLRP

EPOCHS = 20
WARM_UP = 3


class TinyVisionTransformer(LightningModule):
    """torchvision's ``VisionTransformer``: 4x4 patches of ``image_size`` images, one encoder layer of width 8."""

    def __init__(self, image_size: int, num_classes: int) -> None:
        super().__init__()
        from torchvision.models.vision_transformer import VisionTransformer

        self.net = VisionTransformer(image_size=image_size, patch_size=4, num_layers=1, num_heads=2, hidden_dim=8,
                                     mlp_dim=16, num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.net(x)

    def training_step(self, batch, batch_idx):
        """Cross-entropy of one batch."""
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        """Logs ``val_loss``."""
        self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        """SGD."""
        return torch.optim.SGD(self.parameters(), lr=0.01)


class MemoryProbe(Callback):
    """After the explanations of the given epochs: live tensor bytes and the number of per-call rule objects
    (``storage_bytes`` and ``per_call_types``: the memory-probe fixtures)."""

    def __init__(self, epochs: tuple, storage_bytes, per_call_types: tuple) -> None:
        self.epochs = epochs
        self.storage_bytes, self.per_call_types = storage_bytes, per_call_types
        self.tensor_bytes: list = []
        self.per_call: list = []

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch not in self.epochs:
            return
        gc.collect()
        objects = gc.get_objects()
        self.tensor_bytes.append(self.storage_bytes(obj for obj in objects if isinstance(obj, torch.Tensor)))
        self.per_call.append(sum(1 for obj in objects if type(obj).__name__ in self.per_call_types))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_twenty_explained_epochs_of_the_callbacks_keep_transformer_memory_flat(
    tmp_path, growth_share, image_size, make_trainer, num_classes, per_call_types, saved_activation_bytes,
    storage_bytes, tiny_data,
):
    seed_everything(0)
    probe = MemoryProbe((WARM_UP - 1, EPOCHS - 1), storage_bytes, per_call_types)
    explainers = [
        AttributionCallback("attn_lrp", num_samples=4, log_images=False),
        SanityCheckCallback("attn_lrp", every_n_epochs=1, num_samples=3, log_images=False),
        RelevanceClusterCallback("attn_lrp", every_n_epochs=1, num_samples=6, knn=2, log_images=False),
    ]
    model = TinyVisionTransformer(image_size, num_classes)
    # the probe runs after the explainers (callbacks run in list order)
    trainer = make_trainer(tmp_path, [*explainers, probe], max_epochs=EPOCHS, limit_train_batches=1,
                           limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=tiny_data(n=8, batch_size=8))
    assert len(probe.tensor_bytes) == 2
    assert "attribution/attn_lrp/sparseness" in trainer.callback_metrics
    samples = tiny_data(n=8).val_set.tensors[0][:4]

    def explain():
        with Gradient(model.eval(), AttnLRP()) as attributor:
            attributor(samples, torch.zeros(4, dtype=torch.long))

    activation = saved_activation_bytes(model, explain)
    after_warm_up, at_end = probe.tensor_bytes
    assert at_end - after_warm_up <= growth_share * activation, (probe.tensor_bytes, activation)
    assert probe.per_call == [0, 0], probe.per_call
