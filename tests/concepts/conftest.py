"""Fixtures of the concept tests: the residual CNN whose sums are explicit modules
(``tests/_support/concept_models.py``)."""
from _support.fixtures import expose

expose(globals(), "concept_models", {"residual_cnn": "ResidualCNN", "residual_sum_class": "residual_sum_class"})
