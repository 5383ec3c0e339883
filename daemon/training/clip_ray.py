"""CLIP fine-tuning across Ray workers: Ray Train's TorchTrainer runs the single-process loop in each.

Every worker runs vlm_engine.clip.train.main with its `Replicas` rank: a DistributedSampler-style
shard of every batch, DDP gradient all-reduce over gloo (CPU, one torch thread per worker) or nccl
(GPU). Rank 0 writes the trainer's own checkpoints (checkpoint_dir/last.pt, resumed as locally) and,
at the end, the best weights as a Ray Train checkpoint that the driver loads back, so the caller
(daemon.training.clip.train_bundle) calibrates and saves the bundle exactly as after a local run.

Ray loads only here, when a run asks for it (`pip install 'vlmtrader[ray]'`), through the research
commands' own session (daemon.cluster.session.ray_session): the address is "local" (start a Ray on
this machine), "auto", HOST:PORT or ray://HOST:10001, and a failure is one ClusterError line.
checkpoint_dir and dataset_dir must be paths every node sees on a cluster of several machines.
"""

from __future__ import annotations

import contextlib
import pickle
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import structlog

from daemon.cluster.config import LOCAL, RayConfig
from daemon.cluster.errors import ClusterError
from daemon.cluster.session import ray_session
from vlm_engine.clip import ClipSamples, PromptSet, load_dataset_dir
from vlm_engine.clip.replicas import Replicas
from vlm_engine.clip.train import TrainConfig, TrainResult, main

log = structlog.get_logger("daemon.training.clip_ray")

_RESULT_FILE = "result.pkl"


def train_clip_ray(
    cfg: TrainConfig,
    *,
    train: ClipSamples,
    val: ClipSamples,
    prompts: PromptSet,
    address: str = LOCAL,
    workers: int = 1,
    checkpoint_dir: Path | None = None,
    dataset_dir: Path | None = None,
    device: str = "auto",
) -> TrainResult:
    """vlm_engine.clip.train.main across `workers` Ray Train workers (DDP); returns the same TrainResult.

    Args:
        address: "local" starts a Ray here; "auto", HOST:PORT or ray://HOST:10001 joins a cluster.
        dataset_dir: when set, every worker reads its train/validation splits from this dataset
            directory (a path every node sees) instead of receiving them through the object store.
        device: auto (GPU workers when the cluster has a GPU for each), cpu or cuda.
    """
    if workers < 1:
        msg = f"ray workers: need at least 1, got {workers}"
        raise ClusterError(msg)
    if cfg.batch_size % workers or cfg.batch_size // workers < 2:
        msg = f"ray workers: batch_size {cfg.batch_size} must split into {workers} shards of at least 2 charts"
        raise ClusterError(msg)
    with (
        ray_session(RayConfig(address=address)) as ray,
        tempfile.TemporaryDirectory(prefix="vlmtrader-ray-") as scratch,
    ):
        storage = Path(checkpoint_dir, "ray") if checkpoint_dir is not None else Path(scratch)
        result = _fit(
            ray,
            cfg,
            train=train,
            val=val,
            prompts=prompts,
            workers=workers,
            use_gpu=_use_gpu(ray, device, workers),
            storage=storage.resolve(),
            checkpoint_dir=checkpoint_dir,
            dataset_dir=dataset_dir,
        )
    return result


def _fit(
    ray: Any,
    cfg: TrainConfig,
    *,
    train: ClipSamples,
    val: ClipSamples,
    prompts: PromptSet,
    workers: int,
    use_gpu: bool,
    storage: Path,
    checkpoint_dir: Path | None,
    dataset_dir: Path | None,
) -> TrainResult:
    """One TorchTrainer run; rank 0's TrainResult, read back from its checkpoint (which is then
    removed: checkpoint_dir/last.pt is the trainer's own resume point)."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    name = f"clip-{uuid.uuid4().hex[:12]}"
    data: dict[str, Any] = (
        {"dataset_dir": str(dataset_dir)}
        if dataset_dir is not None
        else {"splits": ray.put({"train": train, "validation": val})}
    )
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={
            "cfg": cfg,
            "prompts": prompts,
            "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir is not None else None,
            **data,
        },
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    log.info("ray_train.started", workers=workers, gpu=use_gpu, storage=str(storage))
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as e:
        msg = f"ray training failed: {_first_line(e)}"
        raise ClusterError(msg) from None
    if result.checkpoint is None:
        msg = "ray training finished without rank 0's checkpoint"
        raise ClusterError(msg)
    log.info("ray_train.finished", workers=workers, **(result.metrics or {}))
    try:
        with result.checkpoint.as_directory() as where:
            # written by rank 0 of this very run into this run's own directory: the whole
            # TrainResult as main() returned it, so the bundle saved from it is byte for byte the
            # local one (save_pretrained after from_pretrained would add config keys)
            trained: TrainResult = pickle.loads(Path(where, _RESULT_FILE).read_bytes())
    finally:
        shutil.rmtree(storage / name, ignore_errors=True)
        with contextlib.suppress(OSError):
            storage.rmdir()  # Ray's storage directory, when nothing else is in it
    return trained


def _use_gpu(ray: Any, device: str, workers: int) -> bool:
    """GPU workers for cuda, or for auto when the cluster has a GPU per worker; and the cluster
    must fit the workers now, else TorchTrainer would wait for them forever."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    use_gpu = device == "cuda" or (device == "auto" and gpus >= workers)
    have, kind = (gpus, "GPUs") if use_gpu else (cpus, "CPUs")
    if have < workers:
        msg = f"ray cluster: {workers} workers need {workers} {kind}, the cluster has {have}"
        raise ClusterError(msg)
    return use_gpu


def _train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: main() on this rank's shards; rank 0 reports the best weights."""
    import ray
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    cfg: TrainConfig = config["cfg"]
    cfg = msgspec.structs.replace(
        cfg,
        threads=1 if device.type == "cpu" else cfg.threads,
        progress=cfg.progress and rank == 0,
    )
    if "dataset_dir" in config:
        splits, _ = load_dataset_dir(Path(config["dataset_dir"]))
    else:
        splits = ray.get(config["splits"])
    checkpoint_dir = config["checkpoint_dir"]
    replicas = Replicas(rank=rank, world=world)
    started = time.perf_counter()
    result = main(
        cfg,
        train=splits["train"],
        val=splits["validation"],
        prompts=config["prompts"],
        checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir is not None else None,
        device=str(device),
        replicas=replicas,
    )
    loop_seconds = time.perf_counter() - started  # data to weights, as main() takes locally
    if not replicas.same_everywhere(result.parts.model):
        msg = f"ray training: the {world} replicas ended with different weights (DDP out of sync)"
        raise ClusterError(msg)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            Path(tmp, _RESULT_FILE).write_bytes(pickle.dumps(result))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        metrics = {
            "best_epoch": result.best_epoch,
            "samples_seen": result.samples_seen,
            "loop_seconds": round(loop_seconds, 3),
        }
        ray.train.report(metrics, checkpoint=checkpoint)


def _first_line(error: BaseException) -> str:
    """The innermost line that says what went wrong (a worker's own error, not Ray's preamble)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "Error:" in line or "Exception:" in line]
    return (named or lines or [type(error).__name__])[-1]
