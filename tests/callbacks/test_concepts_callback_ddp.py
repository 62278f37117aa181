"""ConceptCallback under DDP with two CPU processes (gloo), run as a real script: the reference search is
sharded and gathered, figures are drawn once, nothing hangs."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lrp_lightning import canonizers, composites
from lrp_lightning.concepts import relmax

TESTS_DIR = Path(__file__).resolve().parent.parent
PORT_ATTEMPTS = 3

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests_dir!r})
    import torch
    from lightning.pytorch import Callback, Trainer, seed_everything
    from lightning.pytorch.loggers import TensorBoardLogger
    from lrp_lightning.callbacks import ConceptCallback
    from _support.lightning_runs import TinyClassifier, TinyData


    class SaveSummary(Callback):
        def __init__(self, concepts, root):
            self.concepts, self.root = concepts, root

        def on_fit_end(self, trainer, pl_module):
            summary = self.concepts.summary
            torch.save({{"shares": summary.shares, "indices": summary.references["net.0"].indices,
                         "state": pl_module.state_dict()}}, f"{{self.root}}/summary_rank{{trainer.global_rank}}.pt")
            trainer.strategy.barrier()


    if __name__ == "__main__":
        root = sys.argv[1]
        seed_everything(0)
        concepts = ConceptCallback("epsilon_plus", layers=["net.0"], top_k_concepts=2, reference_size=13,
                                   references_per_concept=3, num_samples=4, batch_size=4)
        trainer = Trainer(
            strategy="ddp", accelerator="cpu", devices=2, max_epochs=2, default_root_dir=root,
            logger=TensorBoardLogger(root, name="tb"), callbacks=[concepts, SaveSummary(concepts, root)],
            enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        )
        data = TinyData()
        trainer.fit(TinyClassifier(), train_dataloaders=data.train_dataloader(), val_dataloaders=data.val_dataloader())
    """
)


@pytest.mark.large  # two processes: ~25 s
def test_concepts_callback_under_ddp_shards_the_search_and_draws_figures_once(
    tmp_path, image_data, read_events, tiny_classifier
):
    script = tmp_path / "ddp_concepts.py"
    script.write_text(SCRIPT.format(tests_dir=str(TESTS_DIR)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("MASTER_PORT", None)
    for attempt in range(PORT_ATTEMPTS):
        root = tmp_path / f"attempt{attempt}"
        root.mkdir()
        result = subprocess.run([sys.executable, str(script), str(root)], cwd=root, env=env, capture_output=True,
                                text=True, timeout=300)
        if "address already in use" not in result.stderr.lower():
            break
    assert result.returncode == 0, result.stderr[-4000:]
    version_dirs = sorted((root / "tb").iterdir())
    assert [d.name for d in version_dirs] == ["version_0"]
    events = read_events(version_dirs[0])
    figures = [tag for tag in events.Tags()["images"] if tag.startswith("concepts/")]
    assert figures and all(len(events.Images(tag)) == 2 for tag in figures)
    ranks = [torch.load(root / f"summary_rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    assert torch.equal(ranks[0]["indices"], ranks[1]["indices"])
    assert torch.equal(ranks[0]["shares"]["net.0"], ranks[1]["shares"]["net.0"])
    # the gathered references are those of one search over all 13 reference samples
    model = tiny_classifier()
    model.load_state_dict(ranks[0]["state"])
    reference = torch.utils.data.TensorDataset(*(tensor[:13] for tensor in image_data(24, seed=1).tensors))
    composite = composites.EpsilonPlus(canonizers=[canonizers.SequentialMergeBatchNorm()])
    expected = relmax(model.eval(), composite, reference, ["net.0"], top_k=3)
    assert torch.equal(ranks[0]["indices"], expected["net.0"].indices)
