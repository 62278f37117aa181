"""Fixtures of the metric tests: the small models, data and calls of the comparisons with Quantus 0.6.0
(``tests/_support/quantus_oracle.py``)."""
import warnings

from _support.fixtures import expose

warnings.filterwarnings("ignore", module="quantus")  # the oracle's own warnings, for the whole folder

expose(globals(), "quantus_oracle", {name: name for name in (
    "small_cnn", "small_mlp", "image_batch", "vector_batch", "quantus_scores",
)})
expose(globals(), "two_ranks", {name: name for name in (
    "rank_zero_results", "one_process_expectation", "assert_same_results",
)})
