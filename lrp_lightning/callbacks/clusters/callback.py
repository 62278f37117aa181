"""``RelevanceClusterCallback``: SpRAy during training — which strategies does the model use per class?"""
from __future__ import annotations

import math
import warnings
from typing import Mapping, Optional, Sequence

import torch
from lightning.pytorch import LightningModule, Trainer

from lrp_lightning import image
from lrp_lightning.callbacks.clusters.class_samples import ClassSamples, collect_by_class
from lrp_lightning.callbacks.common import class_indices, class_name_map, explained_submodule, gathered_from_ranks, log_scalars, positive_int, table_dir
from lrp_lightning.auto_canonizers import CanonizerArg, check_canonizers
from lrp_lightning.callbacks.explainers import Bound, ExplainerSpec, build_explainer, parse_explainers
from lrp_lightning.callbacks.explanation import explain
from lrp_lightning.callbacks.figures import prototype_figure, spectrum_figure
from lrp_lightning.callbacks.metric_set import MetricSet
from lrp_lightning.callbacks.samples import BatchToInput, Samples, first_dataloader
from lrp_lightning.callbacks.schedule import ScheduledCallback
from lrp_lightning.callbacks.sinks import sinks_for
from lrp_lightning.callbacks.clusters.spray import (
    ClassClusters,
    cluster_classes,
    pooled_relevance,
    summary_table,
    unit_maps,
    write_tables,
)
from lrp_lightning.cmap import get_cmap

TABLE_SUBDIR = "clusters"


class RelevanceClusterCallback(ScheduledCallback):
    """Spectral relevance analysis (SpRAy, Lapuschkin et al. 2019) of many validation heatmaps per class.

    Up to ``num_samples`` validation samples per class are explained for their label (batched, on
    the LightningModule's device, model state and RNGs restored as by ``AttributionCallback``);
    each heatmap becomes pooled ``|R|`` on a ``pool_size`` grid, scaled to unit length
    (:mod:`lrp_lightning.callbacks.clusters.spray`); per class, the k-nearest-neighbour graph of these
    vectors is embedded spectrally (``torch.linalg.eigh`` of its normalised Laplacian), the
    eigengap chooses the number of clusters, and k-means clusters the embedding. A cluster is a
    strategy the model applies to part of a class; one whose mean heatmap sits on something that
    is not the object (a watermark, a border) is a "Clever Hans" candidate — no masks needed.

    Logged per class ``<class>``: the scalars ``clusters/<class>/eigengap`` and
    ``clusters/<class>/count`` (through ``pl_module.log`` at validation epoch end, straight to the
    loggers at the end of training); on global rank zero the images
    ``clusters/<class>/eigenvalues`` (the smallest eigenvalues, the gap marked) and
    ``clusters/<class>/prototypes`` (per cluster its mean heatmap, its ``typical`` most typical
    inputs and its size) and the table ``clusters/<explainer>/summary`` (per cluster of every class
    its size, share and most typical samples) through every logger's sink
    (:mod:`lrp_lightning.callbacks.sinks`), and the files ``clusters/epoch=<e>-step=<s>.csv``
    (dataloader position, class and cluster of every sample) and ``.md`` (summary) under the first
    logger's ``log_dir`` (else ``default_root_dir``). After each run the result is in :attr:`results` and the cluster
    label of every sample in :attr:`labels`.

    Under DDP each rank explains its share of the samples (every ``world_size``-th), the pooled
    vectors are gathered, every rank clusters the same data identically, and the per-cluster
    heatmap sums are gathered for the prototypes: two ``all_gather`` calls per run, made by every
    rank (also when the explanation failed on one of them, which then skips the run everywhere).

    Parameters
    ----------
    composite : str or Composite
        One explainer (registry name or Composite instance); use one callback per explainer.
    num_samples : int
        Samples per class (the first ones of each class in the first validation dataloader).
    every_n_epochs : int, optional
        Also run at the end of every n-th epoch's validation; None: only at the end of training.
    at_fit_end : bool
        Run once when training ends.
    classes : sequence of int, optional
        Classes to analyse; None: every label in the validation data.
    class_names : sequence or mapping of str, optional
        Display names of the classes (index -> name); default the index.
    pool_size : int
        Side of the pooling grid.
    knn : int
        Neighbours per sample in the affinity graph.
    max_clusters : int
        Largest number of clusters the eigengap may choose.
    typical : int
        Typical inputs shown per cluster.
    batch_size : int
        Samples explained per batch.
    batch_to_input : callable, optional
        Maps a validation batch to ``(x, y)``.
    module : str, optional
        Dotted name of the submodule to explain.
    low, high : float, sequence of float or tensor, optional
        Box-rule bounds (default: per-channel min and max of the samples).
    canonizers : "auto", None or list of Canonizer
        Canonizers of composites built by name.
    seed : int
        Seed of k-means.
    cmap : str
        Colour map of the mean heatmaps (default ``"bwr"``: negative blue, positive red, zero white).
    log_images : bool
        Log the spectra and prototype figures.

    Raises
    ------
    KeyError
        An unknown composite name (the message lists the known names).
    ValueError, TypeError
        Invalid arguments; at fit start, validation data without labels or without the classes.
    """

    def __init__(
        self,
        composite: ExplainerSpec = "epsilon_gamma_box",
        *,
        num_samples: int = 256,
        every_n_epochs: Optional[int] = None,
        at_fit_end: bool = True,
        classes: Optional[Sequence[int]] = None,
        class_names: Optional[Sequence[str] | Mapping[int, str]] = None,
        pool_size: int = 8,
        knn: int = 10,
        max_clusters: int = 8,
        typical: int = 4,
        batch_size: int = 64,
        batch_to_input: Optional[BatchToInput] = None,
        module: Optional[str] = None,
        low: Bound = None,
        high: Bound = None,
        canonizers: CanonizerArg = "auto",
        seed: int = 0,
        cmap: str = "bwr",
        log_images: bool = True,
    ) -> None:
        specs = parse_explainers(composite)
        if len(specs) != 1:
            raise ValueError("RelevanceClusterCallback takes one composite; add one callback per explainer")
        self.name, self.spec = specs[0]
        self.num_samples = positive_int("num_samples", num_samples)
        super().__init__(every_n_epochs, at_fit_end)
        self.classes = class_indices(classes)
        self.class_names = class_name_map(class_names)
        self.pool_size = positive_int("pool_size", pool_size)
        self.knn = positive_int("knn", knn)
        self.max_clusters = positive_int("max_clusters", max_clusters)
        self.typical = positive_int("typical", typical)
        self.batch_size = positive_int("batch_size", batch_size)
        self.batch_to_input = batch_to_input
        self.module = module
        self.low, self.high = low, high
        self.canonizers = check_canonizers(canonizers)
        self.seed = seed
        get_cmap(cmap)
        self.cmap = cmap
        self.log_images = log_images
        self.samples: Optional[ClassSamples] = None
        self.results: list[ClassClusters] = []
        self.labels: dict[str, torch.Tensor] = {}
        self._explainer = None

    @property
    def state_key(self) -> str:
        """Checkpoint key: the class name plus the explainer's name."""
        return self._generate_state_key(explainer=self.name)

    def _class_name(self, label: int) -> str:
        return self.class_names.get(label, str(label))

    def prepare(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Collect the samples per class and build the explainer."""
        loader = first_dataloader(trainer, pl_module, "val")
        if loader is None:
            raise ValueError("RelevanceClusterCallback found no validation dataloader")
        self.samples = collect_by_class(loader, self.num_samples, self.classes, self.batch_to_input)
        model = explained_submodule(pl_module, self.module)
        inputs = self.samples.inputs[: self.batch_size].to(pl_module.device)
        self._explainer = build_explainer(self.name, self.spec, model, inputs, self.low, self.high, self.canonizers)

    def _explain_rows(self, pl_module: LightningModule, rows: torch.Tensor) -> tuple:
        """Pooled vectors (and unit maps for images) of the samples ``rows``, explained for their labels."""
        model = explained_submodule(pl_module, self.module)
        metric_set = MetricSet({}, pl_module.device, False)
        pooled, maps = [], []
        for start in range(0, rows.shape[0], self.batch_size):
            chunk = rows[start : start + self.batch_size]
            batch = Samples(self.samples.inputs[chunk], self.samples.labels[chunk])
            report, = explain(model, batch, "label", [self._explainer], [metric_set], pl_module.device, None,
                              lambda name: False)
            if report.error is not None:
                raise report.error
            pooled.append(pooled_relevance(report.relevance, self.pool_size))
            maps.append(unit_maps(report.relevance))
        width = self.pool_size**2
        pooled_rows = torch.cat(pooled) if pooled else torch.zeros(0, width)
        map_rows = None if not maps or maps[0] is None else torch.cat(maps)
        return pooled_rows, map_rows

    def run(self, trainer: Trainer, pl_module: LightningModule, in_loop: bool) -> None:
        """Run the analysis now and log it (see the class docstring)."""
        if self.samples is None or self._explainer is None:
            return
        world, rank = trainer.world_size, trainer.global_rank
        total = self.samples.labels.shape[0]
        shard = torch.arange(rank, total, world)
        width = self.pool_size**2
        failure = None
        try:
            local, local_maps = self._explain_rows(pl_module, shard)
        except Exception as error:  # reported after the collective call, which every rank makes
            failure, local, local_maps = error, torch.zeros(shard.shape[0], width), None
        per_rank = math.ceil(total / world)
        padded = torch.zeros(per_rank + 1, width)
        padded[0, 0] = float(failure is not None)
        padded[1 : 1 + local.shape[0]] = local
        gathered = gathered_from_ranks(trainer, pl_module, padded)
        if bool((gathered[:, 0, 0] > 0).any()):
            warnings.warn(
                f"RelevanceClusterCallback skipped epoch {trainer.current_epoch}: "
                + (f"{type(failure).__name__}: {failure}" if failure is not None else "the explanation failed on another rank"),
                RuntimeWarning,
            )
            return
        features = torch.zeros(total, width)
        for source in range(world):
            rows = torch.arange(source, total, world)
            features[rows] = gathered[source, 1 : 1 + rows.shape[0]]
        names = {label: self._class_name(label) for label in self.samples.classes()}
        results = cluster_classes(
            features, self.samples.labels, self.samples.positions, names, self.knn, self.max_clusters, self.typical,
            self.seed,
        )
        if image.is_image_batch(self.samples.inputs[:1]):  # the same decision on every rank
            self._mean_maps(trainer, pl_module, results, shard, local_maps)
        self.results = results
        self.labels = {result.name: result.clustering.labels.clone() for result in results}
        scalars = {}
        for result in results:
            scalars[f"clusters/{result.name}/eigengap"] = result.clustering.eigengap
            scalars[f"clusters/{result.name}/count"] = float(result.clustering.count)
        log_scalars(trainer, pl_module, scalars, in_loop)
        if trainer.is_global_zero:
            try:
                self._write(trainer, results)
            except Exception as error:  # a logger failure must not stop training
                warnings.warn(f"RelevanceClusterCallback could not write its logs: {type(error).__name__}: {error}",
                              RuntimeWarning)

    def _mean_maps(self, trainer: Trainer, pl_module: LightningModule, results: Sequence[ClassClusters],
                   shard: torch.Tensor, local_maps: Optional[torch.Tensor]) -> None:
        """Per cluster, the mean unit map of its members, summed over the ranks' shards."""
        height, width = self.samples.inputs.shape[-2:]
        slots = torch.zeros(self.samples.labels.shape[0], dtype=torch.long)
        offset = 0
        for result in results:
            slots[result.rows] = offset + result.clustering.labels
            offset += result.clustering.count
        sums = torch.zeros(offset, height, width)
        if local_maps is not None and shard.numel():
            sums.index_add_(0, slots[shard], local_maps)
        sums = gathered_from_ranks(trainer, pl_module, sums).sum(dim=0)
        offset = 0
        for result in results:
            count = result.clustering.count
            sizes = torch.tensor(result.sizes, dtype=torch.float32).clamp(min=1).view(-1, 1, 1)
            result.mean_maps = sums[offset : offset + count] / sizes
            offset += count

    def _write(self, trainer: Trainer, results: Sequence[ClassClusters]) -> None:
        step, epoch = trainer.global_step, trainer.current_epoch
        write_tables(table_dir(trainer) / TABLE_SUBDIR, f"epoch={epoch:03d}-step={step:06d}", results)
        sinks = sinks_for(trainer)
        summary = summary_table(results)
        for sink in sinks:
            sink.table(f"clusters/{self.name}/summary", summary, step, epoch)
        if not self.log_images:
            return
        for result in results:
            clustering = result.clustering
            shown = min(clustering.eigenvalues.shape[0], self.max_clusters + 2)
            figures = {
                f"clusters/{result.name}/eigenvalues": spectrum_figure(
                    f"class {result.name}: spectrum", clustering.eigenvalues, clustering.count, shown
                )
            }
            if result.mean_maps is not None:
                typical_inputs = [self.samples.inputs[result.rows[members]] for members in result.typical]
                figures[f"clusters/{result.name}/prototypes"] = prototype_figure(
                    f"class {result.name} ({self.name}): mean heatmap and most typical inputs per cluster",
                    result.mean_maps, typical_inputs, result.sizes, self.cmap,
                )
            for tag, figure in figures.items():
                for sink in sinks:
                    sink.figure(tag, figure, step, epoch)
