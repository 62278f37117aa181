"""Two CPU ranks (gloo, spawned) evaluating metrics on their own shards: what rank zero's synced metrics give."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

JOIN_TIMEOUT_S = 180


def rank_worker(rank: int, evaluate: Callable[[Any], dict], per_rank: Sequence[Any], store_path: str,
                result_path: str) -> None:
    """One rank: join the group through a file store (no TCP port to race for), evaluate its part, and on rank zero
    save the results."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=2)
    try:
        results = evaluate(per_rank[rank])
        if rank == 0:
            torch.save(results, result_path)
    finally:
        dist.destroy_process_group()


def rank_zero_results(evaluate: Callable[[Any], dict], per_rank: Sequence[Any], directory: Path,
                      timeout_s: float = JOIN_TIMEOUT_S) -> dict:
    """Run ``evaluate(per_rank[rank])`` on two spawned ranks (spawn, not fork: forking a process that already runs
    threads, OpenMP or earlier tests' writers, can deadlock the children) and return rank zero's results; fails the
    test when the ranks do not finish within ``timeout_s``. ``evaluate`` must be a module-level function."""
    result_path = str(directory / "rank0.pt")
    context = mp.start_processes(rank_worker, args=(evaluate, per_rank, str(directory / "store"), result_path),
                                 nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the two DDP workers did not finish within {timeout_s} s")
    return torch.load(result_path)


def one_process_expectation(evaluate: Callable[[slice], dict], shards: Sequence[slice],
                            per_update: Sequence[str]) -> dict:
    """What the two ranks' synced metrics must give: ``evaluate`` on all samples in one process, except the metrics
    named in ``per_update`` (their value depends on the batch an update sees: noise drawn per update, samples grouped
    within an update), which take the sample-weighted mean of the shards evaluated on their own."""
    single = evaluate(slice(shards[0].start, shards[-1].stop))
    by_shard = [evaluate(shard) for shard in shards]
    total = sum(shard.stop - shard.start for shard in shards)
    weights = [(shard.stop - shard.start) / total for shard in shards]
    for key in single:
        if key.split("/")[0] in per_update:
            single[key] = sum(weight * results[key] for weight, results in zip(weights, by_shard))
    return single


def assert_same_results(synced: dict, expected: dict, metrics: int) -> None:
    """``synced`` holds the same ``metrics`` metrics' results as ``expected``, each finite and equal to it."""
    assert synced.keys() == expected.keys()
    assert len({key.split("/")[0] for key in expected}) == metrics
    for key, value in expected.items():
        assert torch.isfinite(value).all(), key
        torch.testing.assert_close(synced[key], value, msg=key)
