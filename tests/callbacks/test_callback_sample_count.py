"""AttributionCallback asked for more samples than the validation data holds: it says so."""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lrp_lightning.callbacks.samples import collect_samples


def _loader(count):
    return DataLoader(TensorDataset(torch.rand(count, 3, 4, 4), torch.zeros(count, dtype=torch.long)), batch_size=4)


def test_collect_samples_warns_when_the_loader_holds_fewer_samples_than_asked():
    with pytest.warns(UserWarning, match=r"num_samples=12, but the validation dataloader holds only 10 samples"):
        samples = collect_samples(_loader(10), 12)
    assert samples.inputs.shape[0] == 10


def test_collect_samples_is_silent_when_enough_samples_are_there(recwarn):
    samples = collect_samples(_loader(10), 10)
    assert samples.inputs.shape[0] == 10
    assert not [warning for warning in recwarn if issubclass(warning.category, UserWarning)]
