"""Tests for lrp_lightning.cmap and lrp_lightning.image: colour maps, normalisation, rendering."""
import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from lrp_lightning import image
from lrp_lightning.cmap import ColorMap, get_cmap

CYAN, BLUE, BLACK, RED, YELLOW, WHITE = ((0, 255, 255), (0, 0, 255), (0, 0, 0), (255, 0, 0),
                                         (255, 255, 0), (255, 255, 255))


def rgb(cmap, values):
    return get_cmap(cmap)(torch.tensor(values, dtype=torch.float32))


# --- colour maps --------------------------------------------------------------------------------

@pytest.mark.parametrize("name, low, centre, high", [
    ("coldnhot", CYAN, BLACK, YELLOW),
    ("bwr", BLUE, WHITE, RED),
    ("wred", WHITE, (255, 127.5, 127.5), RED),
    ("wblue", WHITE, (127.5, 127.5, 255), BLUE),
    ("gray", BLACK, (127.5, 127.5, 127.5), WHITE),
])
def test_colormap_endpoints_and_centre_are_exact(name, low, centre, high):
    assert torch.equal(rgb(name, [0.0, 0.5, 1.0]), torch.tensor([low, centre, high], dtype=torch.float32))


@pytest.mark.parametrize("name, stops", [
    ("coldnhot", [CYAN, BLUE, BLACK, RED, YELLOW]),
    ("hot", [BLACK, RED, YELLOW, WHITE]),
    ("cold", [BLACK, BLUE, CYAN, WHITE]),
])
def test_colormap_stops_are_exact(name, stops):
    positions = [index / (len(stops) - 1) for index in range(len(stops))]
    assert torch.equal(rgb(name, positions), torch.tensor(stops, dtype=torch.float32))


def test_colormap_interpolates_linearly_and_clamps():
    torch.testing.assert_close(rgb("coldnhot", [0.125, 0.625, 0.875]),
                               torch.tensor([(0, 127.5, 255), (127.5, 0, 0), (255, 127.5, 0)]))
    torch.testing.assert_close(rgb("gray", [-3.0, 0.1, 7.0]), torch.tensor([BLACK, (25.5,) * 3, WHITE]))


def test_colormap_keeps_the_value_shape():
    values = torch.rand(2, 5, 7)
    assert get_cmap("bwr")(values).shape == (2, 5, 7, 3)


def test_reversed_names_mirror_the_map():
    values = torch.linspace(0, 1, 101)
    torch.testing.assert_close(get_cmap("coldnhot_r")(values), get_cmap("coldnhot")(1 - values), rtol=0, atol=1e-3)


def test_matplotlib_names_follow_matplotlib():
    # matplotlib's maps are 256-entry tables; at their entries k / 255 the colours agree
    values = torch.arange(256, dtype=torch.float64) / 255
    expected = torch.tensor(matplotlib.colormaps["viridis"](values.numpy())[:, :3] * 255, dtype=torch.float32)
    torch.testing.assert_close(get_cmap("viridis")(values.float()), expected, rtol=0, atol=1e-3)
    between = get_cmap("viridis")(((torch.arange(255) + 0.5) / 255).float())
    assert ((between >= torch.minimum(expected[:-1], expected[1:]) - 1e-3)
            & (between <= torch.maximum(expected[:-1], expected[1:]) + 1e-3)).all()


def test_unknown_colormap_name_raises():
    with pytest.raises(KeyError, match="coldnhot"):
        get_cmap("no_such_colormap")


def test_custom_colormap_and_its_validation():
    cmap = ColorMap([(0.0, "#000"), (0.25, (1.0, 0.0, 0.0)), (1.0, "#ffffff")], name="mine")
    assert get_cmap(cmap) is cmap
    torch.testing.assert_close(cmap(torch.tensor([0.125, 0.625])), torch.tensor([(127.5, 0, 0), (255, 127.5, 127.5)]))
    for stops in ([(0.0, "#000")], [(0.1, "#000"), (1.0, "#fff")], [(0.0, "#000"), (0.0, "#fff"), (1.0, "#fff")],
                  [(0.0, "#0000"), (1.0, "#fff")], [(0.0, (2.0, 0.0, 0.0)), (1.0, "#fff")]):
        with pytest.raises(ValueError):
            ColorMap(stops)


# --- normalisation and heatmaps -----------------------------------------------------------------

def test_reduce_channels_sums_channels():
    relevance = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(image.reduce_channels(relevance), relevance[:, 0] + relevance[:, 1] + relevance[:, 2])
    assert torch.equal(image.reduce_channels(relevance[:, :1]), relevance[:, 0])
    assert torch.equal(image.reduce_channels(relevance[:, 0]), relevance[:, 0])
    with pytest.raises(ValueError, match="strip"):
        image.reduce_channels(torch.randn(2, 5))


def test_row_percentile_matches_numpy():
    values = torch.randn(3, 57)
    for q in (0.0, 12.5, 50.0, 99.5, 100.0):
        expected = np.percentile(values.numpy(), q, axis=1)
        torch.testing.assert_close(image.row_percentile(values, q), torch.tensor(expected, dtype=torch.float32))
    with pytest.raises(ValueError):
        image.row_percentile(values, 101.0)


def test_heatmap_shape_dtype_device():
    relevance = torch.randn(4, 3, 6, 7)
    rendered = image.heatmap(relevance)
    assert rendered.shape == (4, 3, 6, 7) and rendered.dtype == torch.uint8
    assert rendered.device == relevance.device


def test_symmetric_heatmap_keeps_zero_at_the_centre_and_scales_per_sample():
    relevance = torch.zeros(2, 1, 2, 2)
    relevance[0, 0, 0, 0], relevance[0, 0, 0, 1] = 4.0, -2.0
    relevance[1, 0, 1, 1] = -0.001
    rendered = image.heatmap(relevance, cmap="coldnhot").permute(0, 2, 3, 1)
    assert rendered[0, 0, 0].tolist() == list(YELLOW)            # +max
    assert rendered[0, 0, 1].tolist() == [0, 0, 255]             # -max/2 -> blue stop at 0.25
    assert rendered[0, 1, 0].tolist() == list(BLACK)             # zero
    assert rendered[1, 1, 1].tolist() == list(CYAN)              # -max of the second sample
    assert rendered[1, 0, 0].tolist() == list(BLACK)
    assert torch.equal(image.heatmap(relevance * torch.tensor([3.0, 50.0]).view(2, 1, 1, 1)),
                       image.heatmap(relevance))
    assert image.heatmap(torch.zeros(1, 3, 3)).permute(0, 2, 3, 1).reshape(-1, 3).tolist() == [list(BLACK)] * 9


def test_percentile_clipping_saturates_the_largest_values():
    relevance = torch.arange(1.0, 101.0).view(1, 10, 10)
    clipped = image.normalize(relevance, percentile_clip=50.0)
    scale = np.percentile(np.arange(1.0, 101.0), 50.0)
    expected = (0.5 + 0.5 * relevance / scale).clamp(max=1.0)
    torch.testing.assert_close(clipped, expected)


def test_unsymmetric_heatmap_maps_min_and_max_to_the_ends():
    relevance = torch.tensor([[[2.0, 3.0], [4.0, 6.0]]])
    rendered = image.heatmap(relevance, cmap="hot", symmetric=False).permute(0, 2, 3, 1)
    assert rendered[0, 0, 0].tolist() == list(BLACK) and rendered[0, 1, 1].tolist() == list(WHITE)
    halfway = get_cmap("hot")(torch.tensor(0.5)).round()  # (4 - 2) / (6 - 2)
    assert rendered[0, 1, 0].tolist() == halfway.int().tolist()


# --- inputs, overlays, grids, strips ------------------------------------------------------------

def test_input_image_min_max_and_gray_to_rgb():
    x = torch.tensor([[[[-1.0, 0.0], [1.0, 3.0]]]])
    rendered = image.input_image(x)
    assert rendered.shape == (1, 3, 2, 2) and rendered.dtype == torch.uint8
    assert torch.equal(rendered[0, 0], torch.tensor([[0, 64], [128, 255]], dtype=torch.uint8))
    assert torch.equal(rendered[0, 0], rendered[0, 1]) and torch.equal(rendered[0, 0], rendered[0, 2])
    assert torch.equal(image.input_image(x[:, 0]), rendered)
    rgba = torch.rand(2, 4, 3, 3)
    assert torch.equal(image.input_image(rgba), image.input_image(rgba[:, :3]))
    assert image.input_image(torch.full((1, 3, 2, 2), 5.0)).max() == 0
    with pytest.raises(ValueError):
        image.input_image(torch.rand(2, 5, 3, 3))


def test_overlay_blends_input_and_heatmap():
    x, relevance = torch.rand(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    assert torch.equal(image.overlay(x, relevance, alpha=0.0), image.input_image(x))
    assert torch.equal(image.overlay(x, relevance, alpha=1.0), image.heatmap(relevance))
    half = (image.input_image(x).float() + image.heatmap(relevance).float()) / 2
    assert (image.overlay(x, relevance).float() - half).abs().max() <= 0.5
    with pytest.raises(ValueError):
        image.overlay(x, relevance, alpha=1.5)
    with pytest.raises(ValueError):
        image.overlay(x, relevance[:, :, :4])


def test_attribution_grid_layout():
    x, relevance = torch.rand(3, 1, 4, 6), torch.randn(3, 1, 4, 6)
    grid = image.attribution_grid(x, relevance, cmap="bwr", padding=2)
    assert grid.shape == (3, 3 * 4 + 2 * 2, 3 * 6 + 2 * 2) and grid.dtype == torch.uint8
    tiles = [image.input_image(x), image.heatmap(relevance, cmap="bwr"), image.overlay(x, relevance, cmap="bwr")]
    for row in range(3):
        for column, tile in enumerate(tiles):
            top, left = row * 6, column * 8
            assert torch.equal(grid[:, top:top + 4, left:left + 6], tile[row])
    assert (grid[:, 4:6] == 255).all() and (grid[:, :, 6:8] == 255).all()


def test_attribution_grid_puts_samples_side_by_side_in_columns():
    x, relevance = torch.rand(5, 1, 4, 6), torch.randn(5, 1, 4, 6)
    grid = image.attribution_grid(x, relevance, cmap="bwr", padding=2, columns=2)
    group = 3 * 6 + 2 * 2  # input | heatmap | overlay of one sample
    assert grid.shape == (3, 3 * 4 + 2 * 2, 2 * group + 3 * 2)  # rows 0-2: samples (0, 1), (2, 3), (4, -)
    single = image.attribution_grid(x, relevance, cmap="bwr", padding=2)
    for sample in range(5):
        row, column = divmod(sample, 2)
        left = column * (group + 3 * 2)
        placed = grid[:, row * 6:row * 6 + 4, left:left + group]
        assert torch.equal(placed, single[:, sample * 6:sample * 6 + 4]), sample
    assert (grid[:, 12:16, group + 6:] == 255).all()  # the empty place after the last sample
    assert image.attribution_grid(x[:1], relevance[:1], columns=4).shape == single[:, :4].shape
    with pytest.raises(ValueError, match="columns"):
        image.attribution_grid(x, relevance, columns=0)


def test_is_image_batch():
    assert image.is_image_batch(torch.zeros(2, 3, 4, 4))
    assert image.is_image_batch(torch.zeros(2, 1, 4, 4))
    assert image.is_image_batch(torch.zeros(2, 4, 4, 4))
    assert not image.is_image_batch(torch.zeros(2, 2, 4, 4))
    assert not image.is_image_batch(torch.zeros(2, 3, 4))
    assert not image.is_image_batch(torch.zeros(2, 10))


def test_strip_renders_tabular_and_sequence_relevance_as_cells():
    tabular = torch.randn(2, 10)
    bars = image.strip(tabular, cell_size=3)
    assert bars.shape == (2, 3, 3, 30) and bars.dtype == torch.uint8
    cells = image.heatmap(tabular.unsqueeze(1))
    assert torch.equal(bars[:, :, ::3, ::3], cells)
    assert torch.equal(bars[:, :, 2, 2::3], cells[:, :, 0])
    sequence = torch.randn(2, 5, 20)
    rendered = image.strip(sequence)
    assert rendered.shape == (2, 3, 5 * 12, 20 * 12)
    assert image.strip(torch.randn(1, 1000)).shape == (1, 3, 1, 1000)
    with pytest.raises(ValueError):
        image.strip(torch.randn(2, 3, 4, 5))


def test_save_png_round_trip(tmp_path):
    picture = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    path = image.save_png(picture, tmp_path / "nested" / "grid.png")
    assert np.array_equal(np.asarray(Image.open(path)), picture.permute(1, 2, 0).numpy())
    gray = picture[:1]
    assert np.array_equal(np.asarray(Image.open(image.save_png(gray, tmp_path / "g.png"))), gray[0].numpy())
    with pytest.raises(ValueError):
        image.save_png(picture.float(), tmp_path / "bad.png")
    with pytest.raises(ValueError):
        image.save_png(picture.unsqueeze(0), tmp_path / "bad.png")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rendering_stays_on_the_device():
    relevance, x = torch.randn(2, 3, 8, 8, device="cuda"), torch.rand(2, 3, 8, 8, device="cuda")
    assert image.heatmap(relevance).device == relevance.device
    assert image.attribution_grid(x, relevance).device == relevance.device
    assert torch.equal(image.heatmap(relevance).cpu(), image.heatmap(relevance.cpu()))
