"""CLIP fine-tuning across Ray Train workers (DDP) on the two-node loopback cluster, against a local run.

Three tiny trainings (one epoch, 9 steps of 16 charts) on one small chart dataset: local and Ray
with 1 worker through `vlmtrader train clip` (the workers read the dataset directory themselves),
Ray with 2 workers (one per node, gloo) through train_bundle, the call `model build` makes (the
splits reach the workers through the object store).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
import torch
from safetensors.torch import load_file

from daemon.cli import main
from daemon.training.clip import train_bundle
from tests.ray.conftest import ROOT, RayCluster, free_ports
from tests.vlm_engine.clip_helpers import TINY_TRAIN, chart_dataset, tiny_splits
from vlm_engine.bundle import DatasetRef, ModelCard, read_card
from vlm_engine.clip import load_dataset_dir

pytest.importorskip("ray")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# one torch thread in this process too, as in each CPU worker: the same kernels, the same sums
CFG = msgspec.structs.replace(TINY_TRAIN, threads=1)


@pytest.fixture(scope="module")
def runs(
    ray_cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[ModelCard, Path]]:
    """name -> (card, run directory) for the local, 1-worker and 2-worker trainings."""
    root = tmp_path_factory.mktemp("clip_ddp")
    ds = chart_dataset(root)
    config = root / "train.yaml"
    config.write_bytes(msgspec.yaml.encode(CFG))

    def train_clip(name: str, *ray: str) -> tuple[ModelCard, Path]:
        run = root / name
        args = ["train", "clip", "--dataset", str(ds), "--out", str(run / "bundle")]
        args += ["--config", str(config), "--folds", "2", "--checkpoints", str(run / "checkpoints")]
        assert main([*args, *ray]) == 0
        return read_card(run / "bundle"), run

    out = {
        "local": train_clip("local"),
        "ray1": train_clip("ray1", "--ray", ray_cluster.address, "--workers", "1"),
    }
    splits, info = load_dataset_dir(ds)
    card = train_bundle(
        splits=splits,
        spec=info.chart_spec(),
        dataset=DatasetRef(
            source=str(ds),
            manifest_hash=info.manifest_hash,
            counts={k: len(v) for k, v in splits.items()},
        ),
        cfg=CFG,
        out=root / "ray2" / "bundle",
        checkpoints=root / "ray2" / "checkpoints",
        device="cpu",
        folds=2,
        ray_address=ray_cluster.address,
        ray_workers=2,
    )
    out["ray2"] = (card, root / "ray2")
    return out


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "bundle" / "clip" / "model.safetensors")


def test_train_when_two_ray_workers_then_same_card_fields_and_checkpoint_as_local(runs):
    local, _ = runs["local"]
    card, run = runs["ray2"]

    assert msgspec.structs.asdict(card).keys() == msgspec.structs.asdict(local).keys()
    assert card.metrics.keys() | card.unmeasured.keys() == (
        local.metrics.keys() | local.unmeasured.keys()
    )
    assert card.files.keys() == local.files.keys()
    assert card.train_config == local.train_config
    assert [h.keys() for h in card.history] == [h.keys() for h in local.history]
    figures = [v for h in card.history for v in h.values()] + list(card.metrics.values())
    assert all(math.isfinite(v) for v in figures)
    assert card.history[-1]["step"] == local.history[-1]["step"]  # same global batches

    ray_last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    local_last = torch.load(runs["local"][1] / "checkpoints" / "last.pt", weights_only=True)
    assert ray_last.keys() == local_last.keys()
    assert ray_last["model"].keys() == local_last["model"].keys()
    assert list((run / "checkpoints").iterdir()) == [run / "checkpoints" / "last.pt"]


def test_train_when_two_ray_workers_then_each_learns_from_its_own_shard(runs):
    one, two = _weights(runs["ray1"][1]), _weights(runs["ray2"][1])
    # shards of 8 give other contrastive negatives than the whole batch of 16: other weights
    assert max(float((one[k] - two[k]).abs().max()) for k in one) > 1e-4


def test_train_when_one_ray_worker_and_same_seed_then_weights_and_bundle_id_equal_local(runs):
    local, ray1 = _weights(runs["local"][1]), _weights(runs["ray1"][1])

    assert local.keys() == ray1.keys()
    assert max(float((local[k] - ray1[k]).abs().max()) for k in local) <= 1e-5
    assert runs["ray1"][0].history == runs["local"][0].history
    assert runs["ray1"][0].bundle_id == runs["local"][0].bundle_id


def test_train_when_accelerate_runs_two_cpu_processes_then_synced_like_two_ray_workers(runs):
    """`--accelerate` in 2 CPU processes (torchrun, gloo: accelerate's own multi-CPU launch needs
    MPI): each rank a shard of every batch and the gradients all-reduced, so rank 0 ends with the
    2-Ray-worker run's weights (the loop used to step the unwrapped model: no sync, and every
    process took the whole batch, i.e. the local run's weights)."""
    pytest.importorskip("accelerate")
    root = runs["ray2"][1].parent
    run = root / "accelerate2"
    env = {**os.environ, "HF_HOME": str(root / "hf-home"), "OMP_NUM_THREADS": "1"}
    env |= {
        "ACCELERATE_USE_CPU": "true",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(free_ports(1)[0]),
         "-m", "daemon.cli", "train", "clip", "--dataset", str(root / "ds"),
         "--out", str(run / "bundle"), "--config", str(root / "train.yaml"), "--folds", "2",
         "--checkpoints", str(run / "checkpoints"), "--accelerate"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    two_ray, two_accelerate = _weights(runs["ray2"][1]), _weights(run)
    local = _weights(runs["local"][1])
    assert max(float((two_ray[k] - two_accelerate[k]).abs().max()) for k in two_ray) <= 1e-5
    assert max(float((local[k] - two_accelerate[k]).abs().max()) for k in local) > 1e-4


@pytest.mark.parametrize(
    ("address", "says"),
    [("127.0.0.1:{port}", "no Ray cluster answers there"), ("nohost", "not an address")],
)
def test_train_clip_when_bad_ray_address_then_one_line_error_and_exit_1(
    address: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    address = address.format(port=free_ports(1)[0])
    args = ["train", "clip", "--dataset", str(tmp_path), "--out", str(tmp_path / "b")]
    code = main([*args, "--ray", address, "--workers", "2"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1
    assert f"--ray {address}: " in err
    assert says in err


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--ray", "--accelerate"], "pick one"),
        (["--workers", "2"], "--workers 2: needs --ray"),
        (["--ray", "--workers", "0"], "--workers 0: needs --ray and at least 1"),
    ],
)
def test_train_clip_when_worker_flags_do_not_fit_then_one_line_and_exit_2(
    flags: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    args = ["train", "clip", "--dataset", str(tmp_path), "--out", str(tmp_path / "b")]
    assert main([*args, *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert says in err


def test_train_clip_ray_when_batch_does_not_split_into_workers_then_refused_before_connecting():
    from daemon.cluster.errors import ClusterError
    from daemon.training.clip_ray import train_clip_ray

    splits = tiny_splits()
    with pytest.raises(ClusterError, match="batch_size 16 must split into 3 shards"):
        train_clip_ray(
            CFG,
            train=splits["train"],
            val=splits["validation"],
            prompts=runs_prompts(),
            address="127.0.0.1:1",
            workers=3,
        )


def runs_prompts():
    from vlm_engine.clip.data import default_prompts
    from vlm_engine.clip.quickset import class_names

    return default_prompts(class_names(tiny_splits()))
