"""The new callbacks of the suite under DDP with two CPU processes (gloo), run as a real script."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch


TESTS_DIR = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests_dir!r})
    import torch
    from lightning.pytorch import Callback, Trainer, seed_everything
    from lightning.pytorch.loggers import TensorBoardLogger
    from lrp_lightning.callbacks import AttributionCallback, RelevanceClusterCallback, SanityCheckCallback
    from _support.lightning_runs import TinyClassifier, TinyData


    class SaveResults(Callback):
        def __init__(self, sanity, clusters, root):
            self.sanity, self.clusters, self.root = sanity, clusters, root

        def on_fit_end(self, trainer, pl_module):
            rank = trainer.global_rank
            torch.save(
                {{"labels": self.clusters.labels, "counts": [r.clustering.count for r in self.clusters.results],
                  "maps": [r.mean_maps for r in self.clusters.results],
                  "mprt": self.sanity.results["gradient"].mprt}},
                f"{{self.root}}/results_rank{{rank}}.pt",
            )
            trainer.strategy.barrier()


    if __name__ == "__main__":
        root, devices = sys.argv[1], int(sys.argv[2])
        seed_everything(0)
        sanity = SanityCheckCallback("gradient", every_n_epochs=1, num_samples=4)
        clusters = RelevanceClusterCallback("epsilon_plus_flat", num_samples=7, knn=3, every_n_epochs=1)
        callbacks = [AttributionCallback("gradient", num_samples=4), sanity, clusters, SaveResults(sanity, clusters, root)]
        trainer = Trainer(
            strategy="ddp" if devices > 1 else "auto", accelerator="cpu", devices=devices, max_epochs=2,
            default_root_dir=root, logger=TensorBoardLogger(root, name="tb"), callbacks=callbacks,
            enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        )
        trainer.fit(TinyClassifier(), datamodule=TinyData())
    """
)


def _run(tmp_path, devices):
    root = tmp_path / f"devices{devices}"
    root.mkdir()
    script = root / "fit.py"
    script.write_text(SCRIPT.format(tests_dir=str(TESTS_DIR)))
    # the checkout under test, not whichever copy of the package is installed
    path = os.pathsep.join(filter(None, [str(TESTS_DIR.parent), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    result = subprocess.run(
        [sys.executable, str(script), str(root), str(devices)], cwd=root, env=env, capture_output=True, text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return root


def test_ddp_two_cpu_ranks_shard_the_clusters_and_log_each_image_once(tmp_path, read_events):
    root = _run(tmp_path, 2)
    version_dirs = sorted((root / "tb").iterdir())
    assert [d.name for d in version_dirs] == ["version_0"]
    events = read_events(version_dirs[0])
    # two validation epochs, each written once (the end of training is at the second one's step: not repeated)
    assert len(events.Images("sanity/gradient/mprt")) == 2
    for name in ("0", "1", "2"):
        assert len(events.Images(f"clusters/{name}/prototypes")) == 2
        assert len(events.Scalars(f"clusters/{name}/count")) == 2
    assert len(events.Scalars("attribution/random/aopc_morf")) == 2
    assert len(sorted((version_dirs[0] / "clusters").glob("*.csv"))) == 2
    ranks = [torch.load(root / f"results_rank{rank}.pt") for rank in (0, 1)]
    assert ranks[0]["counts"] == ranks[1]["counts"]
    for name, labels in ranks[0]["labels"].items():
        assert torch.equal(labels, ranks[1]["labels"][name])
    for maps0, maps1 in zip(ranks[0]["maps"], ranks[1]["maps"]):
        assert torch.equal(maps0, maps1)

