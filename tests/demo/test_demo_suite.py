"""The demo with the whole suite on a validation split that mixes watermarked and clean images:
SpRAy finds the watermark strategy only when the model learned the shortcut, and the LRP
composites' AOPC beats the random baseline."""
import io
from contextlib import redirect_stdout

import pytest

from lrp_lightning.callbacks import RelevanceClusterCallback
from lrp_lightning.demo.__main__ import parse_args, train
from lrp_lightning.demo.data import IMAGE_SIZE, WATERMARK_SIZE, ShapesDataModule
from lrp_lightning.demo.summary import read_scalars


def watermark_clusters(callback: RelevanceClusterCallback, val_split) -> dict:
    """Per class: purity and recall of the cluster that best matches the watermarked images (by IoU),
    and the largest share of positive prototype relevance that any cluster puts on the watermark."""
    watermarked = val_split.watermark_corners >= 0
    stats = {}
    for result in callback.results:
        marked = watermarked[result.positions]
        best = None
        for cluster in range(result.clustering.count):
            inside = result.clustering.labels == cluster
            overlap = int((inside & marked).sum())
            iou = overlap / int((inside | marked).sum())
            if best is None or iou > best[0]:
                best = (iou, overlap / int(inside.sum()), overlap / int(marked.sum()))
        # the class's watermark sits in corner <label> of every watermarked image of that class
        mask = val_split.watermark_masks[result.positions[marked][0]] if marked.any() else None
        shares = [float(m.clamp(min=0)[mask].sum() / m.clamp(min=0).sum()) for m in result.mean_maps]
        stats[result.name] = {"purity": best[1], "recall": best[2], "watermark_share": max(shares)}
    return stats


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory, restored_global_state):
    """The demo with the suite at its default length (6 epochs), confounder on and off."""
    root = tmp_path_factory.mktemp("demo_suite")
    runs = {}
    for switch in ("--confounder", "--no-confounder"):
        # the label explained, as in docs/suite.md's figures (the demo explains the prediction by default;
        # its default configuration is checked by tests/test_demo.py)
        args = parse_args(["--accelerator", "cpu", switch, "--log-dir", str(root), "--val-watermark", "mixed",
                           "--composites", "epsilon_gamma_box", "epsilon_plus_flat", "--sanity-samples", "2",
                           "--target", "label"])
        with restored_global_state(), redirect_stdout(io.StringIO()):
            trainer = train(args)
        clusters = next(c for c in trainer.callbacks if isinstance(c, RelevanceClusterCallback))
        data = ShapesDataModule(n_train=1, n_val=args.n_val, seed=args.seed, val_watermark="mixed")
        data.setup()
        runs[switch] = (read_scalars(trainer.logger.log_dir), watermark_clusters(clusters, data.val_split))
    return runs


def test_spray_puts_the_watermarked_images_of_a_confounded_model_into_one_cluster(demo_runs):
    area_share = WATERMARK_SIZE**2 / IMAGE_SIZE**2
    _, confounded = demo_runs["--confounder"]
    for name, stats in confounded.items():
        assert stats["purity"] >= 0.9 and stats["recall"] >= 0.9, (name, stats)
        assert stats["watermark_share"] > 30 * area_share, (name, stats)
    _, clean = demo_runs["--no-confounder"]
    for name, stats in clean.items():
        assert stats["watermark_share"] < 3 * area_share, (name, stats)


def test_lrp_aopc_beats_the_random_baseline_logged_every_epoch(demo_runs):
    scalars, _ = demo_runs["--no-confounder"]
    epochs = len(scalars["val/acc"])
    assert len(scalars["attribution/random/aopc_morf"]) == epochs
    for name in ("epsilon_gamma_box", "epsilon_plus_flat"):
        assert scalars[f"attribution/{name}/aopc_morf"][-1] > scalars["attribution/random/aopc_morf"][-1]
        drift = scalars[f"attribution/{name}/drift_rank"]
        assert len(drift) == epochs - 1 and all(value > 0 for value in drift)
        assert drift[-1] < drift[0]
