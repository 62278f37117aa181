"""AttributionCallback under DDP with two CPU processes (gloo), run as a real script."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch


TESTS_DIR = Path(__file__).resolve().parents[1]
PORT_ATTEMPTS = 3

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests_dir!r})
    import torch
    from lightning.pytorch import Callback, Trainer, seed_everything
    from lightning.pytorch.loggers import TensorBoardLogger
    from lrp_lightning.callbacks import AttributionCallback
    from _support.lightning_runs import TinyClassifier, TinyData


    class SaveSamples(Callback):
        def __init__(self, attribution, root):
            self.attribution, self.root = attribution, root

        def on_fit_end(self, trainer, pl_module):
            torch.save(self.attribution.samples.inputs, f"{{self.root}}/samples_rank{{trainer.global_rank}}.pt")
            metric = trainer.callback_metrics["attribution/epsilon_plus_flat/sparseness"]
            torch.save(metric, f"{{self.root}}/metric_rank{{trainer.global_rank}}.pt")
            trainer.strategy.barrier()  # rank 0 (the process the test waits for) exits after rank 1 wrote


    if __name__ == "__main__":
        root = sys.argv[1]
        seed_everything(0)
        attribution = AttributionCallback(["epsilon_plus_flat", "gradient"], num_samples=4)
        trainer = Trainer(
            strategy="ddp", accelerator="cpu", devices=2, max_epochs=2, default_root_dir=root,
            logger=TensorBoardLogger(root, name="tb"), callbacks=[attribution, SaveSamples(attribution, root)],
            enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        )
        data = TinyData()
        # loaders passed to fit: Lightning gives the validation loader a DistributedSampler
        trainer.fit(TinyClassifier(), train_dataloaders=data.train_dataloader(), val_dataloaders=data.val_dataloader())
    """
)


def run_ddp_script(tmp_path: Path) -> Path:
    """Run the two-rank script; returns its output root. Retries in a fresh directory when another
    process took the port between Lightning's free-port probe and its bind."""
    script = tmp_path / "ddp_fit.py"
    script.write_text(SCRIPT.format(tests_dir=str(TESTS_DIR)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("MASTER_PORT", None)  # Lightning asks the OS for a free port
    for attempt in range(PORT_ATTEMPTS):
        root = tmp_path / f"attempt{attempt}"
        root.mkdir()
        result = subprocess.run(
            [sys.executable, str(script), str(root)], cwd=root, env=env, capture_output=True, text=True, timeout=240
        )
        if "address already in use" not in result.stderr.lower():
            break
    assert result.returncode == 0, result.stderr[-4000:]
    return root


def test_ddp_two_cpu_ranks_log_each_image_once_and_explain_the_same_first_samples(tmp_path, image_data, read_events):
    tmp_path = run_ddp_script(tmp_path)
    version_dirs = sorted((tmp_path / "tb").iterdir())
    assert [d.name for d in version_dirs] == ["version_0"]
    events = read_events(version_dirs[0])
    for name in ("epsilon_plus_flat", "gradient"):
        assert len(events.Images(f"attribution/{name}/grid")) == 2
    assert len(events.Tensors("attribution/epsilon_plus_flat/rule_map/text_summary")) == 1
    assert len(events.Images("attribution/curves/aopc_morf")) == 2
    assert not (tmp_path / "attribution").exists()

    expected = image_data(24, seed=1).tensors[0][:4]
    for rank in (0, 1):
        assert torch.equal(torch.load(tmp_path / f"samples_rank{rank}.pt"), expected)
    assert torch.equal(torch.load(tmp_path / "metric_rank0.pt"), torch.load(tmp_path / "metric_rank1.pt"))
