"""Fixtures of the logger tests: the run every logger gets, what it must contain, and readers of each logger's
own records (``tests/_support/logger_runs.py``)."""
import pytest

from _support.fixtures import expose

expose(globals(), "logger_runs", {
    "logged_fit": "fit", "plain_fit": "plain_fit", "validation_steps": "validation_steps",
    "assert_everything_once": "assert_everything_once", "free_port": "free_port",
    "every_epoch_images": "EVERY_EPOCH_IMAGES", "every_epoch_tables": "EVERY_EPOCH_TABLES",
    "once_tables": "ONCE_TABLES", "scalars": "SCALARS", "plots": "PLOTS",
    "mlflow_artifacts": "mlflow_artifacts", "mlflow_logged": "mlflow_logged", "wandb_records": "wandb_records",
    "wandb_history": "wandb_history", "wandb_summary": "wandb_summary", "wandb_logged": "wandb_logged",
    "comet_messages": "comet_messages", "comet_uploads": "comet_uploads",
})


@pytest.fixture(scope="module")
def plain_weights(tmp_path_factory, plain_fit) -> dict:
    """Final weights of the logged run's fit without callbacks or logger (once per test module)."""
    return plain_fit(tmp_path_factory.mktemp("plain"))
