"""The demo's synthetic shapes data: determinism, shapes, masks and the watermark confounder."""
import math

import pytest
import torch

from lrp_lightning.demo.data import (
    CLASS_NAMES,
    IMAGE_SIZE,
    WATERMARK_OPACITY,
    WATERMARK_SIZE,
    ShapesDataModule,
    ShapesDataset,
    generate_split,
    input_bounds,
    normalize,
    stamp_watermarks,
)

N = 600


@pytest.fixture(scope="module")
def confounded():
    return generate_split(N, seed=3, confounded=True)


@pytest.fixture(scope="module")
def unconfounded():
    return generate_split(N, seed=4, confounded=False)


def _fields(split):
    return (split.images, split.labels, split.object_masks, split.watermark_masks, split.watermark_corners)


def test_same_seed_same_data_other_seed_other_data():
    first, again, other = generate_split(20, 7, True), generate_split(20, 7, True), generate_split(20, 8, True)
    for a, b in zip(_fields(first), _fields(again)):
        assert torch.equal(a, b)
    assert not torch.equal(first.images, other.images)


def test_generation_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    generate_split(10, 0, True)
    assert torch.equal(state, torch.get_rng_state())


def test_shapes_dtypes_and_range(confounded):
    assert confounded.images.shape == (N, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert confounded.images.dtype == torch.float32
    assert 0.0 <= confounded.images.min() and confounded.images.max() <= 1.0
    assert confounded.labels.shape == (N,) and set(confounded.labels.tolist()) == set(range(len(CLASS_NAMES)))
    for mask in (confounded.object_masks, confounded.watermark_masks):
        assert mask.shape == (N, IMAGE_SIZE, IMAGE_SIZE) and mask.dtype == torch.bool


def test_masks_are_disjoint_and_watermark_is_one_square(confounded):
    assert not (confounded.object_masks & confounded.watermark_masks).any()
    assert (confounded.object_masks.sum(dim=(1, 2)) > 50).all()
    assert (confounded.watermark_masks.sum(dim=(1, 2)) == WATERMARK_SIZE**2).all()
    rows = confounded.watermark_masks.any(dim=2).sum(dim=1)
    cols = confounded.watermark_masks.any(dim=1).sum(dim=1)
    assert (rows == WATERMARK_SIZE).all() and (cols == WATERMARK_SIZE).all()


def test_watermark_mask_sits_in_its_corner(confounded):
    half = IMAGE_SIZE // 2
    for i in range(50):
        ys, xs = confounded.watermark_masks[i].nonzero(as_tuple=True)
        corner = int(confounded.watermark_corners[i])
        assert (ys.float().mean() > half) == (corner >= 2)
        assert (xs.float().mean() > half) == (corner % 2 == 1)


def _white_cells():
    """Where the watermark's checkerboard of 2x2-pixel cells is white, (size, size) bool."""
    index = torch.arange(WATERMARK_SIZE) // 2
    return (index.view(-1, 1) + index.view(1, -1)) % 2 == 1


def test_stamp_blends_a_checkerboard_of_two_pixel_cells_into_the_corner_only():
    gray = torch.full((4, 3, IMAGE_SIZE, IMAGE_SIZE), 0.5)
    images = gray.clone()
    masks = stamp_watermarks(images, torch.arange(4))
    far = IMAGE_SIZE - 2 - WATERMARK_SIZE
    for corner, (top, left) in enumerate([(2, 2), (2, far), (far, 2), (far, far)]):
        expected_mask = torch.zeros(IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bool)
        expected_mask[top : top + WATERMARK_SIZE, left : left + WATERMARK_SIZE] = True
        assert torch.equal(masks[corner], expected_mask)
        patch = images[corner, :, top : top + WATERMARK_SIZE, left : left + WATERMARK_SIZE]
        cells = _white_cells()
        expected = 0.5 + WATERMARK_OPACITY * (cells.float() - 0.5)
        torch.testing.assert_close(patch, expected.expand(3, -1, -1))
        assert torch.equal(images[corner][:, ~expected_mask], gray[corner][:, ~expected_mask])


def test_generated_watermark_is_a_faint_checkerboard(confounded):
    cells = _white_cells()
    contrasts = []
    for i in range(50):
        patch = confounded.images[i][:, confounded.watermark_masks[i]].view(3, WATERMARK_SIZE, WATERMARK_SIZE)
        contrasts.append(patch[:, cells].mean() - patch[:, ~cells].mean())
    # white minus black cells: the opacity, up to the background's texture and noise
    assert torch.stack(contrasts).mean().item() == pytest.approx(WATERMARK_OPACITY, abs=0.05)


def test_object_pixels_have_one_colour(confounded):
    for i in range(50):
        pixels = confounded.images[i][:, confounded.object_masks[i]]
        assert pixels.std(dim=1).max() < 0.1


def _compactness(mask):
    """Area over squared largest distance from the centroid: pi (circle), 2 (square), 3*sqrt(3)/4 (triangle)."""
    ys, xs = mask.nonzero(as_tuple=True)
    points = torch.stack([ys, xs], 1).float() + 0.5
    radius = (points - points.mean(0)).norm(dim=1).max() + 0.5
    return mask.sum().item() / radius.item() ** 2


def test_object_mask_has_the_labelled_shape(unconfounded):
    references = torch.tensor([math.pi, 2.0, 3 * math.sqrt(3) / 4])
    compactness = torch.tensor([_compactness(mask) for mask in unconfounded.object_masks])
    predicted = (compactness.view(-1, 1) - references).abs().argmin(dim=1)
    assert (predicted == unconfounded.labels).float().mean() > 0.95


def test_full_confounder_puts_the_watermark_in_the_class_corner(confounded):
    assert torch.equal(confounded.watermark_corners, confounded.labels)


def test_partial_confounder_marks_the_class_at_the_given_rate():
    split = generate_split(2000, 5, True, confounder_strength=0.6)
    rate = (split.watermark_corners == split.labels).float().mean().item()
    assert rate == pytest.approx(0.6 + 0.4 / 4, abs=0.04)


def test_without_confounder_the_corner_is_independent_of_the_class(unconfounded):
    for label in range(len(CLASS_NAMES)):
        corners = unconfounded.watermark_corners[unconfounded.labels == label]
        shares = torch.bincount(corners, minlength=4).float() / corners.numel()
        assert (shares - 0.25).abs().max() < 0.1


@pytest.mark.parametrize(
    "kwargs", [{"n": 0}, {"n": 5, "confounder_strength": 1.5}, {"n": 5, "confounder_strength": -0.1}]
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        generate_split(seed=0, confounded=True, **kwargs)


def test_normalized_inputs_lie_within_the_input_bounds(confounded):
    low, high = input_bounds()
    inputs = normalize(confounded.images)
    assert (inputs >= low - 1e-6).all() and (inputs <= high + 1e-6).all()
    assert torch.allclose(normalize(torch.zeros(1, 3, 1, 1)), low)


def test_dataset_items_are_normalized_images_and_labels(confounded):
    dataset = ShapesDataset(confounded)
    image, label = dataset[3]
    assert len(dataset) == N and int(label) == int(confounded.labels[3])
    assert torch.equal(image, normalize(confounded.images[3:4])[0])


def test_datamodule_confounds_train_only_and_shuffles_reproducibly():
    modules = [ShapesDataModule(n_train=96, n_val=40, batch_size=16, seed=2) for _ in range(2)]
    for module in modules:
        module.setup()
    assert torch.equal(modules[0].train_split.watermark_corners, modules[0].train_split.labels)
    assert not torch.equal(modules[0].val_split.watermark_corners, modules[0].val_split.labels)
    first, second = (next(iter(module.train_dataloader())) for module in modules)
    assert torch.equal(first[1], second[1]) and first[0].shape == (16, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert sum(batch[0].shape[0] for batch in modules[0].val_dataloader()) == 40
