"""AttributionCallback on a LightningModule whose ``forward`` takes several inputs, in real
Trainer runs read back from the TensorBoard event files."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule, LightningModule, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lrp_lightning.callbacks import AttributionCallback, RelevanceClusterCallback, SanityCheckCallback
from lrp_lightning.composites import EpsilonPlus
from lrp_lightning.metrics import RegionPerturbation, Sparseness
from lrp_lightning.rules import Norm

SEED = 4321


class Add(nn.Module):
    def forward(self, a, b):
        return a + b


class TwoInputClassifier(LightningModule):
    """An image branch and a vector branch, added, then a linear head: ``forward(image, vector)``."""

    def __init__(self) -> None:
        super().__init__()
        self.image_branch = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 8 * 8, 6))
        self.vector_branch = nn.Linear(4, 6)
        self.add = Add()
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(6, 3))

    def forward(self, image, vector):
        return self.head(self.add(self.image_branch(image), self.vector_branch(vector)))

    def training_step(self, batch, batch_idx):
        (image, vector), label = batch
        return F.cross_entropy(self(image, vector), label)

    def validation_step(self, batch, batch_idx):
        (image, vector), label = batch
        self.log("val_loss", F.cross_entropy(self(image, vector), label))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class PairDataset(Dataset):
    """Items ``((image, vector), label)``."""

    def __init__(self, n: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 1, 8, 8, generator=generator)
        self.vectors = torch.randn(n, 4, generator=generator)
        self.labels = torch.randint(3, (n,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        return (self.images[index], self.vectors[index]), self.labels[index]


class PairData(LightningDataModule):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.train_set, self.val_set = PairDataset(16, seed), PairDataset(16, seed + 1)

    def train_dataloader(self):
        return DataLoader(self.train_set, 8, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, 8)


@pytest.fixture
def fit(make_trainer):
    """Call ``fit(tmp_path, callbacks, max_epochs, data, **trainer_options)`` for a seeded fit of the two-input
    classifier; returns (trainer, model, data)."""

    def fit(tmp_path, callbacks, max_epochs=2, data=None, **kwargs):
        seed_everything(SEED)
        model, data = TwoInputClassifier(), data or PairData()
        trainer = make_trainer(tmp_path, callbacks, max_epochs=max_epochs, **kwargs)
        trainer.fit(model, datamodule=data)
        return trainer, model, data

    return fit


def stab(d: torch.Tensor, epsilon: float = 1e-6) -> torch.Tensor:
    return d + epsilon * torch.where(d >= 0, 1.0, -1.0).to(d)


def transposed(forward, input: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``Wᵀ grad`` of the linear map ``forward(input, weight)`` (no bias), by autograd."""
    leaf = input.detach().clone().requires_grad_(True)
    result, = torch.autograd.grad(forward(leaf, weight), leaf, grad)
    return result


def epsilon_plus_by_hand(net: TwoInputClassifier, image, vector, relevance):
    """DESIGN's EpsilonPlus on this net with Norm at the addition, written out (float64): Epsilon at the
    dense layers, ZPlus at the convolution, Pass at the ReLUs, ``R_x = x ⊙ Jᵀ(R / stab(z))`` at the sum."""
    net = copy.deepcopy(net).double()
    image, vector, relevance = image.double(), vector.double(), relevance.double()
    conv, linear_image = net.image_branch[0], net.image_branch[3]
    hidden = torch.relu(conv(image))
    image_features, vector_features = linear_image(hidden.flatten(1)), net.vector_branch(vector)
    total = image_features + vector_features
    head = net.head[1]
    at_sum = torch.relu(total) * transposed(F.linear, torch.relu(total), head.weight, relevance / stab(head(torch.relu(total))))
    r_image_features = image_features * at_sum / stab(total)
    r_vector_features = vector_features * at_sum / stab(total)
    r_vector = vector * transposed(F.linear, vector, net.vector_branch.weight, r_vector_features / stab(vector_features))
    r_hidden = hidden.flatten(1) * transposed(F.linear, hidden.flatten(1), linear_image.weight,
                                              r_image_features / stab(image_features))
    r_hidden = r_hidden.reshape(hidden.shape)
    w_pos, w_neg = conv.weight.clamp(min=0), conv.weight.clamp(max=0)
    x_pos, x_neg = image.clamp(min=0), image.clamp(max=0)

    def conv2d(x, weight):
        return F.conv2d(x, weight, padding=conv.padding)

    z_plus = conv2d(x_pos, w_pos) + conv.bias.clamp(min=0)[None, :, None, None] + conv2d(x_neg, w_neg)
    s = r_hidden / stab(z_plus)
    r_image = x_pos * transposed(conv2d, x_pos, w_pos, s) + x_neg * transposed(conv2d, x_neg, w_neg, s)
    return r_image, r_vector


def test_each_input_gets_its_heatmap_and_the_metrics_judge_all_inputs_together(tmp_path, read_events, fit, gini):
    lrp = EpsilonPlus(layer_map=[(Add, Norm())])
    callback = AttributionCallback({"lrp": lrp, "gradient": "gradient"}, num_samples=4)
    trainer, model, data = fit(tmp_path, [callback], logger=TensorBoardLogger(tmp_path, name="tb"))
    assert isinstance(callback.samples.inputs, tuple)
    assert torch.equal(callback.samples.inputs[0], data.val_set.images[:4])
    assert torch.equal(callback.samples.inputs[1], data.val_set.vectors[:4])
    events = read_events(trainer.logger.log_dir)
    tags = events.Tags()
    steps = [trainer.num_training_batches * (epoch + 1) for epoch in range(2)]
    for name in ("lrp", "gradient"):
        grid = events.Images(f"attribution/{name}/grid/input_0")
        assert [event.step for event in grid] == steps
        assert (grid[0].height, grid[0].width) == (4 * 8 + 3 * 2, 3 * 8 + 2 * 2)
        assert len(events.Images(f"attribution/{name}/grid/input_1")) == 2  # the vectors as heat strips
        assert f"attribution/{name}/grid" not in tags["images"]
        for metric in ("sparseness", "complexity", "drift_rank"):
            assert len(events.Scalars(f"attribution/{name}/{metric}")) == (1 if metric.startswith("drift") else 2)
        assert f"attribution/{name}/aopc_morf" not in tags["scalars"]
    assert len(events.Scalars("attribution/lrp/conservation")) == 2
    assert len(events.Scalars("attribution/random/sparseness")) == 2

    # the last epoch explained the final weights: the plain gradient of both inputs, by autograd
    net = copy.deepcopy(model).eval()
    image = data.val_set.images[:4].clone().requires_grad_(True)
    vector = data.val_set.vectors[:4].clone().requires_grad_(True)
    output = net(image, vector)
    grad_image, grad_vector = torch.autograd.grad(output, (image, vector), F.one_hot(data.val_set.labels[:4], 3).float())
    expected = gini(torch.cat([grad_image.flatten(1), grad_vector], dim=1)).mean()
    assert events.Scalars("attribution/gradient/sparseness")[-1].value == pytest.approx(float(expected), rel=1e-4)
    # and the LRP values it logged: EpsilonPlus with Norm at the addition, written out by hand
    one_hot = F.one_hot(data.val_set.labels[:4], 3).float()
    r_image, r_vector = epsilon_plus_by_hand(net, data.val_set.images[:4], data.val_set.vectors[:4], one_hot)
    assert not torch.allclose(r_image, grad_image.double() * data.val_set.images[:4].double())
    expected = gini(torch.cat([r_image.flatten(1), r_vector], dim=1)).mean()
    assert events.Scalars("attribution/lrp/sparseness")[-1].value == pytest.approx(float(expected), rel=1e-4)


def test_batch_to_input_returning_a_tuple_of_inputs_and_a_checkpoint_round_trip(tmp_path, make_trainer, fit):
    def batch_to_input(batch):
        (image, vector), label = batch
        return (image * 2, vector), label

    first = AttributionCallback("gradient", num_samples=3, batch_to_input=batch_to_input)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _, _, data = fit(tmp_path, [first, checkpoint], max_epochs=1, enable_checkpointing=True)
    assert torch.equal(first.samples.inputs[0], 2 * data.val_set.images[:3])
    resumed = AttributionCallback("gradient", num_samples=3)
    seed_everything(SEED)
    trainer = make_trainer(tmp_path, [resumed], max_epochs=2)
    trainer.fit(TwoInputClassifier(), datamodule=PairData(seed=10), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert isinstance(resumed.samples.inputs, tuple) and len(resumed.samples.inputs) == 2
    for restored, saved in zip(resumed.samples.inputs, first.samples.inputs):
        assert torch.equal(restored, saved)
    assert "attribution/gradient/sparseness" in trainer.callback_metrics


def test_a_metric_that_needs_a_single_input_raises_at_fit_start(tmp_path, fit):
    callback = AttributionCallback("gradient", num_samples=2,
                                   metrics={"aopc": RegionPerturbation(patch_size=2, steps=2), "sparseness": Sparseness()})
    with pytest.raises(ValueError, match=r"the metrics \['aopc'\] take the model, the inputs or masks"):
        fit(tmp_path, [callback], max_epochs=1)


@pytest.mark.parametrize("make_callback", [
    lambda: SanityCheckCallback("gradient", num_samples=2),
    lambda: RelevanceClusterCallback("gradient", num_samples=2),
], ids=["sanity", "clusters"])
def test_callbacks_for_one_input_reject_several_inputs(tmp_path, make_callback, fit):
    with pytest.raises(TypeError, match="explains models with one input.*AttributionCallback explains models with several"):
        fit(tmp_path, [make_callback()], max_epochs=1)


@pytest.mark.parametrize("inputs, error, message", [
    ((torch.randn(2, 3), torch.randn(3, 3)), ValueError, r"share one batch size N >= 1, got shapes \(\(2, 3\), \(3, 3\)\)"),
    ((torch.ones(2, 3, dtype=torch.long),), TypeError, "hold no floating-point tensor"),
    ((), ValueError, "empty tuple"),
    ((torch.randn(2, 3), "text"), TypeError, r"sample inputs\[1\] must be a torch.Tensor"),
])
def test_bad_sample_tuples_raise_the_documented_error(inputs, error, message):
    with pytest.raises(error, match=message):
        AttributionCallback("gradient", samples=(inputs, torch.zeros(2, dtype=torch.long)))
