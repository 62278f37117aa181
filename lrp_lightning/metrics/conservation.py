"""Conservation: relative gap between the relevance entering and leaving an LRP backward pass."""
from torch import Tensor

from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import check_same_batch, flat_attributions


class Conservation(SampleMeanMetric):
    """Mean over samples of ``|sum R_in - sum R_out| / |sum R_out|``; 0 when relevance is conserved.

    Parameters
    ----------
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    higher_is_better = False

    def update(self, input_relevance: Tensor, output_relevance: Tensor) -> None:
        """Accumulate the conservation gap of each sample.

        Parameters
        ----------
        input_relevance : Tensor
            Relevance at the input (N, ...).
        output_relevance : Tensor
            Relevance put at the output (N, ...), e.g. the one-hot target scores (N, classes).
        """
        incoming = flat_attributions(input_relevance)
        self._follow_device(incoming)
        outgoing = check_same_batch("output_relevance", output_relevance, incoming.shape[0])
        total_out = outgoing.to(incoming.device).double().reshape(incoming.shape[0], -1).sum(dim=1)
        total_in = incoming.double().sum(dim=1)
        self._accumulate((total_in - total_out).abs() / total_out.abs(), incoming, outgoing)
