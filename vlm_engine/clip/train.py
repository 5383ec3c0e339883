"""Fine-tune CLIP on chart/text pairs; shaped like nanoGPT: a frozen config in, main() top to bottom.

Single process by default. Across workers (DDP) on a Ray cluster: `vlmtrader train clip --ray
[ADDRESS] --workers N` (daemon/training/clip_ray.py runs this same loop in every worker with a
`Replicas`: each rank a shard of each batch, gradients all-reduced). Without Ray, through Hugging
Face accelerate (`pip install vlmtrader[multigpu]`): `accelerate launch --multi_gpu
--num_processes 4 -m daemon.cli train clip --dataset DIR --out BUNDLE --accelerate`, each process
the Replicas rank the accelerator names (the same split and DDP as on Ray).

Over 400 lines: shaped like nanoGPT (STYLE.md rule 9), main() reads top to bottom; cut up, its
state would be threaded through helpers.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt
import structlog
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from vlm_engine.calibrate.metrics import accuracy, ece_mce, softmax
from vlm_engine.clip.data import ClipSamples, PromptSet, default_prompts
from vlm_engine.clip.encode import encode_images, logit_scale, prompt_embeddings
from vlm_engine.clip.errors import ClipError
from vlm_engine.clip.model import (
    ClipModelConfig,
    ClipParts,
    build_compact_clip,
    load_clip,
    train_tokenizer,
)
from vlm_engine.clip.replicas import Replicas, Towers

log = structlog.get_logger("vlm_engine.clip.train")

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
Unit = Annotated[float, msgspec.Meta(ge=0, le=1)]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


class TrainConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything that decides a training run. base "" means the embedded compact CLIP built from model."""

    base: str = ""
    model: ClipModelConfig = msgspec.field(default_factory=ClipModelConfig)
    epochs: PositiveInt = 8
    batch_size: Annotated[int, msgspec.Meta(ge=2)] = 64
    learning_rate: PositiveFloat = 5e-4
    min_learning_rate: Annotated[float, msgspec.Meta(ge=0)] = 2e-5
    weight_decay: Annotated[float, msgspec.Meta(ge=0)] = 0.05
    warmup_steps: Annotated[int, msgspec.Meta(ge=0)] = 50
    grad_clip: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    hard_negatives: Annotated[int, msgspec.Meta(ge=0)] = 1
    prompt_mix: Unit = 0.5
    direction_weight: Annotated[float, msgspec.Meta(ge=0)] = 0.5
    # cross-entropy of each image against every class prompt; off: it slowed learning here
    prompt_weight: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    precision: Precision = "auto"
    gradient_checkpointing: bool = False
    patience: PositiveInt = 3
    min_epochs: PositiveInt = 2
    eval_batch_size: PositiveInt = 256
    seed: Annotated[int, msgspec.Meta(ge=0)] = 0
    threads: Annotated[int, msgspec.Meta(ge=0)] = 0
    progress: bool = True


class EpochLog(msgspec.Struct, frozen=True, kw_only=True):
    """One epoch's figures, as logged and stored in the model card."""

    epoch: int
    step: int
    train_loss: float
    val_accuracy: float
    val_ece: float
    learning_rate: float
    logit_scale: float


class TrainResult:
    """The trained (best) model with its prompts and the per-epoch history."""

    def __init__(
        self,
        *,
        parts: ClipParts,
        prompts: PromptSet,
        history: list[EpochLog],
        best_epoch: int,
        samples_seen: int,
    ) -> None:
        self.parts = parts
        self.prompts = prompts
        self.history = history
        self.best_epoch = best_epoch
        self.samples_seen = samples_seen


def choose_device(name: str = "auto") -> torch.device:
    """auto: CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: auto is fp16 (bf16 when supported) on CUDA and fp32 on CPU."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def get_lr(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_learning_rate."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_steps + 1)
    if step >= total:
        return cfg.min_learning_rate
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.min_learning_rate + coeff * (cfg.learning_rate - cfg.min_learning_rate)


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    scale: torch.Tensor,
    image_keys: torch.Tensor,
    text_keys: torch.Tensor,
) -> torch.Tensor:
    """Symmetric contrastive loss; texts past the first B are extra negatives (hard negatives).

    A text is a positive for every image with the same key (class), so repeated classes in a
    batch are not pushed apart; keys < 0 are never positive.
    """
    b = image_features.shape[0]
    logits = scale * image_features @ text_features.T
    positive = (image_keys[:, None] == text_keys[None, :]) & (text_keys[None, :] >= 0)
    target = positive.float() / positive.sum(1, keepdim=True).clamp(min=1)
    image_to_text = -(F.log_softmax(logits, dim=1) * target).sum(1).mean()
    own = positive[:, :b].T.float()
    text_to_image = (
        -(F.log_softmax(logits[:, :b].T, dim=1) * own / own.sum(1, keepdim=True)).sum(1).mean()
    )
    return (image_to_text + text_to_image) / 2


@torch.no_grad()
def estimate_pattern_calibration(
    parts: ClipParts, samples: ClipSamples, prompts: PromptSet, batch_size: int
) -> tuple[float, float]:
    """Zero-shot accuracy and ECE of the pattern prompts on a split, at the model's own logit scale."""
    class_features, _ = prompt_embeddings(parts, prompts)
    images = encode_images(parts, samples.images, batch_size=batch_size)
    probs = softmax(
        logit_scale(parts) * images.astype(np.float64) @ class_features.T.astype(np.float64)
    )
    index = {name: i for i, name in enumerate(prompts.classes)}
    labels = np.array([index.get(p, -1) for p in samples.patterns], dtype=np.int64)
    keep = labels >= 0
    return accuracy(probs[keep], labels[keep]), ece_mce(probs[keep], labels[keep])[0]


def main(
    cfg: TrainConfig,
    *,
    train: ClipSamples,
    val: ClipSamples,
    prompts: PromptSet | None = None,
    checkpoint_dir: Path | None = None,
    device: str = "auto",
    accelerator: Any = None,
    replicas: Replicas | None = None,
) -> TrainResult:
    """Train and return the model of the epoch with the lowest validation (error + ECE).

    replicas: this process's rank among data-parallel workers (default: the only one).
    accelerator: a Hugging Face accelerate Accelerator under `accelerate launch`: its device and
        its process (rank process_index of num_processes) as the replicas.
    """
    # -- setup ------------------------------------------------------------------------------
    if accelerator is not None:  # `accelerate launch` joined the process group: rank r of w
        replicas = Replicas(rank=accelerator.process_index, world=accelerator.num_processes)
        if cfg.batch_size % replicas.world or cfg.batch_size // replicas.world < 2:
            msg = f"accelerate: batch_size {cfg.batch_size} must split into {replicas.world} shards of at least 2 charts"
            raise ClipError(msg)
    replicas = replicas or Replicas()
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    prompts = prompts or default_prompts(sorted(set(train.patterns)))
    class_index = {name: i for i, name in enumerate(prompts.classes)}
    unknown = sorted(set(train.patterns) - set(class_index))
    if unknown:
        msg = f"training patterns without prompts: {', '.join(unknown)}"
        raise ClipError(msg)
    dev = accelerator.device if accelerator is not None else choose_device(device)
    amp = autocast_dtype(cfg.precision, dev)

    # -- model: the embedded compact CLIP or a pretrained one, same path from here ----------
    if cfg.base:
        parts = load_clip(cfg.base)
    else:
        corpus = (
            train.corpus()
            + [t for ts in prompts.patterns.values() for t in ts]
            + [*prompts.up, *prompts.down]
        )
        tokenizer = train_tokenizer(
            corpus, vocab_size=cfg.model.vocab_size, max_tokens=cfg.model.max_text_tokens
        )
        parts = build_compact_clip(cfg.model, tokenizer, seed=cfg.seed)
    model: Any = parts.model.to(dev)
    if cfg.gradient_checkpointing:
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [
        p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)
    ]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.learning_rate,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16 and dev.type == "cuda")
    # DDP over both towers in one forward (under accelerate too: its prepare() would wrap the
    # model alone, and the loss goes through the towers, so its gradients would never sync)
    towers: Any = replicas.wrap(Towers(model), dev)

    # -- resume ------------------------------------------------------------------------------
    steps_per_epoch = max(1, len(train) // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    start_epoch, step, best_score, best_epoch, bad_epochs = 0, 0, math.inf, -1, 0
    best_state: dict[str, torch.Tensor] | None = None
    history: list[EpochLog] = []
    last = checkpoint_dir / "last.pt" if checkpoint_dir is not None else None
    if last is not None and last.exists():
        try:  # tensors and plain values only: a pickle from elsewhere cannot run code here
            state = torch.load(last, map_location=dev, weights_only=True)
        except pickle.UnpicklingError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            msg = f"{last}: not a checkpoint this trainer wrote ({first}); remove it to start over"
            raise ClipError(msg) from None
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step = state["epoch"] + 1, state["step"]
        best_score, best_epoch, bad_epochs = (
            state["best_score"],
            state["best_epoch"],
            state["bad_epochs"],
        )
        best_state = state["best_state"]
        history = [msgspec.convert(h, EpochLog) for h in state["history"]]
        log.info("checkpoint.loaded", path=str(last), epoch=state["epoch"], step=step)

    # -- loop ---------------------------------------------------------------------------------
    up_texts, down_texts = list(prompts.up), list(prompts.down)
    prompt_lists = [list(prompts.patterns[c]) for c in prompts.classes]
    prompt_texts = [t for texts in prompt_lists for t in texts]
    prompt_pool = torch.zeros(len(prompt_lists), len(prompt_texts))
    start = 0
    for row, texts in enumerate(prompt_lists):
        prompt_pool[row, start : start + len(texts)] = 1.0 / len(texts)
        start += len(texts)
    keys = np.array([class_index[p] for p in train.patterns], dtype=np.int64)
    samples_seen = 0
    for epoch in range(start_epoch, cfg.epochs):
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(len(train))
        model.train()
        losses = []
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not (cfg.progress and replicas.is_main),
            leave=False,
        )
        for it in bar:
            whole = order[it * cfg.batch_size : (it + 1) * cfg.batch_size]
            batch = replicas.shard(whole)
            texts, text_keys = _batch_texts(train, batch, keys, prompt_lists, rng, cfg)
            direction = train.direction[batch]
            moving = np.flatnonzero(direction != 0)
            lr = get_lr(step, total_steps, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr

            use_direction = cfg.direction_weight > 0 and moving.size >= 2
            dir_texts = [
                str(rng.choice(up_texts if direction[i] > 0 else down_texts))
                for i in (moving.tolist() if use_direction else [])
            ]
            # Texts repeat a lot (templates, prompts): encode each distinct one once, then gather.
            class_texts = prompt_texts if cfg.prompt_weight > 0 else []
            unique, inverse = _distinct([*texts, *dir_texts, *class_texts])
            pixels = parts.preprocess(train.images[batch], device=dev)
            tokens = parts.tokenize(unique, dev)
            with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
                image_raw, text_raw, scale = towers(pixels, tokens)
                image_features = F.normalize(image_raw.float(), dim=-1)
                every_text = F.normalize(text_raw.float(), dim=-1)[
                    torch.as_tensor(inverse, device=dev)
                ]
                n_texts, n_dir = len(texts), len(dir_texts)
                text_features = every_text[:n_texts]
                image_keys = torch.as_tensor(keys[batch], device=dev)
                loss = clip_loss(
                    image_features,
                    text_features,
                    scale,
                    image_keys,
                    torch.as_tensor(text_keys, device=dev),
                )
                if cfg.prompt_weight > 0:
                    # the zero-shot read-out itself: each image against every class's mean prompt
                    class_features = F.normalize(
                        prompt_pool.to(dev) @ every_text[n_texts + n_dir :], dim=-1
                    )
                    loss = loss + cfg.prompt_weight * F.cross_entropy(
                        scale * image_features @ class_features.T, image_keys
                    )
                if use_direction:
                    dir_features = every_text[n_texts : n_texts + n_dir]
                    dir_keys = torch.as_tensor(direction[moving].astype(np.int64) + 1, device=dev)
                    loss = loss + cfg.direction_weight * clip_loss(
                        image_features[torch.as_tensor(moving, device=dev)],
                        dir_features,
                        scale,
                        dir_keys,
                        dir_keys,
                    )

            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            samples_seen += len(whole)
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.2e}")
        bar.close()

        # -- eval, log, checkpoint, early stop ---------------------------------------------
        val_accuracy, val_ece = replicas.from_main(
            estimate_pattern_calibration(parts, val, prompts, cfg.eval_batch_size), dev
        )
        entry = EpochLog(
            epoch=epoch + 1,
            step=step,
            train_loss=replicas.mean(float(np.mean(losses)) if losses else 0.0, dev),
            val_accuracy=val_accuracy,
            val_ece=val_ece,
            learning_rate=get_lr(step, total_steps, cfg),
            logit_scale=logit_scale(parts),
        )
        history.append(entry)
        if replicas.is_main:
            log.info("epoch.finished", **msgspec.structs.asdict(entry))
        score = (1.0 - val_accuracy) + val_ece
        if score < best_score - 1e-6:
            best_score, best_epoch, bad_epochs = score, epoch + 1, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        if last is not None and replicas.is_main:
            last.parent.mkdir(parents=True, exist_ok=True)
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch,
                    "step": step,
                    "best_score": best_score,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "best_state": best_state,
                    "history": [msgspec.structs.asdict(h) for h in history],
                },
                last,
            )
        if epoch + 1 >= cfg.min_epochs and bad_epochs >= cfg.patience:
            log.info(
                "training.stopped_early", epoch=epoch + 1, best_epoch=best_epoch, val_ece=val_ece
            )
            break

    # -- keep the best epoch's weights --------------------------------------------------------
    if best_state is not None:
        model.load_state_dict(best_state)
    if accelerator is not None and not replicas.same_everywhere(model):
        msg = f"accelerate: the {replicas.world} processes ended with different weights (DDP out of sync)"
        raise ClipError(msg)
    parts.model = model.to("cpu").eval()
    if cfg.gradient_checkpointing:
        getattr(
            parts.model,
            "activation_checkpointing_disable",
            parts.model.gradient_checkpointing_disable,
        )()
    return TrainResult(
        parts=parts,
        prompts=prompts,
        history=history,
        best_epoch=best_epoch,
        samples_seen=samples_seen,
    )


def _batch_texts(
    samples: ClipSamples,
    batch: npt.NDArray[np.int64],
    keys: npt.NDArray[np.int64],
    prompt_lists: list[list[str]],
    rng: np.random.Generator,
    cfg: TrainConfig,
) -> tuple[list[str], npt.NDArray[np.int64]]:
    """One positive text per image (a dataset text, or a class prompt with prob. prompt_mix), then hard negatives."""
    texts: list[str] = []
    for i in batch.tolist():
        options = prompt_lists[keys[i]] if rng.random() < cfg.prompt_mix else samples.texts[i]
        texts.append(str(options[int(rng.integers(len(options)))]))
    text_keys = [int(k) for k in keys[batch]]
    for i in batch.tolist():
        negatives = samples.hard_negatives[i]
        for j in rng.permutation(len(negatives))[: cfg.hard_negatives].tolist():
            texts.append(negatives[j])
            text_keys.append(-1)
    return texts, np.asarray(text_keys, dtype=np.int64)


def _distinct(texts: list[str]) -> tuple[list[str], list[int]]:
    """The distinct texts in first-seen order and, per input text, its index among them."""
    index: dict[str, int] = {}
    inverse = [index.setdefault(t, len(index)) for t in texts]
    return list(index), inverse
