"""The callback's pictures fit TensorBoard's image card: grids of at most 16 samples in at most 8 rows."""
import torch

from lrp_lightning import image
from lrp_lightning.callbacks import explanation


def test_grid_shows_the_first_sixteen_samples_eight_to_a_column():
    tile, padding = 8, 2
    x, relevance = torch.rand(20, 3, tile, tile), torch.randn(20, 3, tile, tile)
    grid = explanation._grid(x, relevance, "bwr")
    expected = image.attribution_grid(x[:16], relevance[:16], cmap="bwr", columns=2)
    assert torch.equal(grid, expected)
    assert grid.shape[1] == 8 * tile + 7 * padding  # eight rows
    few = explanation._grid(x[:5], relevance[:5], "bwr")
    assert torch.equal(few, image.attribution_grid(x[:5], relevance[:5], cmap="bwr"))  # one column up to eight


def test_the_callbacks_draw_both_signs_on_white():
    from lrp_lightning.callbacks import AttributionCallback, RelevanceClusterCallback

    assert AttributionCallback().cmap == "bwr" and RelevanceClusterCallback("gradient").cmap == "bwr"
    colours = image.heatmap(torch.tensor([[[-1.0, 0.0, 1.0]]]), cmap="bwr")[0, :, 0, :]  # (RGB, pixel)
    assert colours.T.tolist() == [[0, 0, 255], [255, 255, 255], [255, 0, 0]]
