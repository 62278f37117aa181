"""Shared pieces of the logger tests: the run every logger gets, what it must contain, and readers
of each logger's own records (MLflow through MlflowClient, W&B from its offline run directory,
Comet from its offline archive).

No tests live here; ``tests/loggers/conftest.py`` hands it to the logger tests as fixtures.
"""
from __future__ import annotations

import json
import re
import socket
import struct
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from lightning.pytorch import seed_everything

from _support.lightning_runs import TinyClassifier, TinyData, make_trainer
from lrp_lightning.callbacks import AttributionCallback, RelevanceClusterCallback, SanityCheckCallback

SEED = 1234
EPOCHS = 2
CLASSES = ("0", "1", "2")
# what the three callbacks log at every validation epoch end of the run below (rule maps once)
EVERY_EPOCH_IMAGES = (
    ["attribution/epsilon_plus_flat/grid", "attribution/gradient/grid", "attribution/curves/aopc_morf",
     "sanity/gradient/mprt"]
    + [f"clusters/{name}/{figure}" for name in CLASSES for figure in ("eigenvalues", "prototypes")]
)
# the plots among them (figures, not heatmaps)
PLOTS = ["attribution/curves/aopc_morf", "sanity/gradient/mprt"] + [
    f"clusters/{name}/{figure}" for name in CLASSES for figure in ("eigenvalues", "prototypes")
]
EVERY_EPOCH_TABLES = ["clusters/gradient/summary"]
ONCE_TABLES = ["attribution/epsilon_plus_flat/rule_map"]
SCALARS = ["attribution/epsilon_plus_flat/sparseness", "sanity/gradient/mprt_spearman", "clusters/0/count"]


def callbacks() -> list:
    """AttributionCallback, SanityCheckCallback and RelevanceClusterCallback, each at every validation epoch end."""
    return [
        AttributionCallback(["epsilon_plus_flat", "gradient"], num_samples=3),
        SanityCheckCallback("gradient", num_samples=3, every_n_epochs=1, at_fit_end=False),
        RelevanceClusterCallback("gradient", num_samples=4, knn=2, every_n_epochs=1, at_fit_end=False),
    ]


def fit(root: Path, logger: Any, extra_callbacks: tuple = (), **kwargs: Any) -> tuple:
    """The seeded two-epoch fit of the tiny classifier with the three callbacks; returns (trainer, model)."""
    seed_everything(SEED)
    model, data = TinyClassifier(), TinyData()
    trainer = make_trainer(root, [*callbacks(), *extra_callbacks], logger=logger, max_epochs=EPOCHS, **kwargs)
    trainer.fit(model, datamodule=data)
    return trainer, model


def plain_fit(root: Path) -> dict:
    """Final weights of the same fit without callbacks or logger."""
    seed_everything(SEED)
    model, data = TinyClassifier(), TinyData()
    make_trainer(root, [], max_epochs=EPOCHS).fit(model, datamodule=data)
    return {key: value.clone() for key, value in model.state_dict().items()}


def validation_steps(trainer: Any) -> list[int]:
    """``trainer.global_step`` at each validation epoch end of the run."""
    return [trainer.num_training_batches * (epoch + 1) for epoch in range(EPOCHS)]


def assert_everything_once(logged: Counter, steps: list[int]) -> None:
    """``logged`` counts (tag, step) pairs: each expected picture and table exactly once per validation step,
    the rule map once, at the first one."""
    expected = Counter({(tag, step): 1 for tag in EVERY_EPOCH_IMAGES + EVERY_EPOCH_TABLES for step in steps})
    expected.update({(tag, steps[0]): 1 for tag in ONCE_TABLES})
    assert logged == expected, (f"extra: {sorted((logged - expected).items())}", f"missing: {sorted((expected - logged).items())}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------- MLflow
MLFLOW_IMAGE_FILE = re.compile(r"^(?P<key>.+)\+step\+(?P<step>\d+)\+timestamp\+\d+\+[0-9a-f-]+\.png$")


def mlflow_artifacts(client: Any, run_id: str, path: str = "") -> list[str]:
    """Every artifact file of the run, recursively."""
    files = []
    for item in client.list_artifacts(run_id, path or None):
        files += mlflow_artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return files


def mlflow_logged(client: Any, run_id: str) -> Counter:
    """(tag, step) of every stepped image (``images/<key>+step+<s>+...png``, ``/`` written as ``~``),
    of every figure (``figures/<tag>/epoch=<e>-step=<s>.png``) and of every table
    (``tables/<tag>/epoch=<e>-step=<s>.json``) of the run."""
    logged: Counter = Counter()
    for path in mlflow_artifacts(client, run_id):
        name = path.split("/", 1)[1]
        if path.startswith("images/"):
            match = MLFLOW_IMAGE_FILE.match(name)
            if match:
                logged[(match["key"].replace("~", "/"), int(match["step"]))] += 1
        elif path.startswith(("tables/", "figures/")):
            tag, file = name.rsplit("/", 1)
            logged[(tag, int(re.search(r"step=(\d+)", file)[1]))] += 1
    return logged


# ---------------------------------------------------------------- Weights & Biases
WANDB_BLOCK = 32768  # the .wandb file is a LevelDB-style log of protobuf records in 32 KiB blocks


def wandb_records(run_dir: Path) -> Iterator[Any]:
    """The protobuf records of an offline run's ``run-<id>.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    position, pending = 7, b""
    while position + 7 <= len(data):
        left = WANDB_BLOCK - position % WANDB_BLOCK
        if left < 7:  # block trailer
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if position + 7 + length > len(data):  # a record still being written
            return
        payload, position = data[position + 7 : position + 7 + length], position + 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + payload)
            pending = b""
            yield record
        elif kind in (2, 3):  # first or middle piece
            pending += payload


def wandb_history(run_dir: Path) -> list[dict]:
    """The history rows of an offline run: ``{key: decoded value}`` per ``wandb.log`` call."""
    rows = []
    for record in wandb_records(run_dir):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
    return rows


def wandb_summary(run_dir: Path) -> dict:
    """The run summary (the last value of every key), as the offline run recorded it."""
    summary: dict = {}
    for record in wandb_records(run_dir):
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return summary


def wandb_logged(rows: list[dict]) -> Counter:
    """(tag, trainer/global_step) of every image and table in the history rows."""
    logged: Counter = Counter()
    for row in rows:
        for key, value in row.items():
            if key.endswith("/_type") and value in ("images/separated", "table-file"):
                logged[(key[: -len("/_type")], row["trainer/global_step"])] += 1
    return logged


# ---------------------------------------------------------------- Comet
def comet_messages(offline_directory: Path) -> list[dict]:
    """The messages of the one offline experiment archived under ``offline_directory``."""
    (archive,) = offline_directory.glob("*.zip")
    with zipfile.ZipFile(archive) as opened:
        lines = opened.read("messages.json").decode().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def comet_uploads(messages: list[dict], kind: str) -> list[dict]:
    """The ``additional_params`` of the file uploads of one kind (``"image"``, ``"asset"``, ...)."""
    return [message["payload"]["additional_params"] for message in messages
            if message["type"] == "file_upload" and message["payload"].get("upload_type") == kind]
