from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.vlm_engine.clip_helpers import TINY_MODEL, TINY_TRAIN, tiny_splits, tiny_train
from vlm_engine.clip import ClipDataError, ClipError, ClipSamples
from vlm_engine.clip.train import TrainConfig, _distinct, clip_loss, get_lr


def _features(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_clip_loss_when_texts_match_images_then_lower_than_when_shuffled():
    images = _features(8, 16, 0)
    keys = torch.arange(8)
    aligned = clip_loss(images, images, torch.tensor(10.0), keys, keys)
    shuffled = clip_loss(
        images,
        images[torch.randperm(8, generator=torch.Generator().manual_seed(1))],
        torch.tensor(10.0),
        keys,
        keys,
    )
    assert aligned < shuffled


def test_clip_loss_when_hard_negative_equals_positive_then_loss_rises():
    images = _features(4, 16, 0)
    keys = torch.arange(4)
    plain = clip_loss(images, images, torch.tensor(10.0), keys, keys)
    # hard negatives (key -1) that look exactly like the positives compete with them
    with_negatives = clip_loss(
        images,
        torch.cat([images, images]),
        torch.tensor(10.0),
        keys,
        torch.cat([keys, -torch.ones(4, dtype=torch.long)]),
    )
    # image->text now splits its mass between the positive and its twin: log(2), averaged with text->image
    assert float(with_negatives - plain) == pytest.approx(np.log(2) / 2, abs=0.01)


def test_clip_loss_when_same_class_twice_then_both_texts_count_as_positives():
    images = _features(2, 16, 0)
    texts = torch.stack([images[0], images[0]])
    same = clip_loss(
        images[:1].repeat(2, 1),
        texts,
        torch.tensor(20.0),
        torch.tensor([0, 0]),
        torch.tensor([0, 0]),
    )
    assert same == pytest.approx(
        float(np.log(2)), abs=1e-4
    )  # uniform over two equal positives is optimal


def test_get_lr_when_warming_up_then_rises_and_then_decays_to_min():
    cfg = TrainConfig(learning_rate=1e-3, min_learning_rate=1e-5, warmup_steps=10)
    warm = [get_lr(s, 100, cfg) for s in range(10)]
    decay = [get_lr(s, 100, cfg) for s in range(10, 101)]
    assert warm == sorted(warm)
    assert decay == sorted(decay, reverse=True)
    assert decay[-1] == pytest.approx(1e-5)
    assert max(decay) <= 1e-3


def test_train_when_same_seed_twice_then_identical_weights_and_history():
    a = tiny_train()
    b = tiny_train()
    for (name, pa), pb in zip(
        a.parts.model.state_dict().items(), b.parts.model.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb), name
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]


def test_train_when_resumed_from_checkpoint_then_same_as_uninterrupted(tmp_path: Path):
    two = msgspec.structs.replace(TINY_TRAIN, epochs=2, patience=10)
    straight = tiny_train(two)
    tiny_train(msgspec.structs.replace(two, epochs=1), checkpoint_dir=tmp_path)
    assert (tmp_path / "last.pt").exists()
    resumed = tiny_train(two, checkpoint_dir=tmp_path)
    assert [h.epoch for h in resumed.history] == [1, 2]
    for pa, pb in zip(
        straight.parts.model.state_dict().values(),
        resumed.parts.model.state_dict().values(),
        strict=True,
    ):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_train_when_patience_runs_out_then_stops_early():
    cfg = msgspec.structs.replace(
        TINY_TRAIN, epochs=6, patience=1, min_epochs=1, learning_rate=1e-9, min_learning_rate=0.0
    )
    result = tiny_train(cfg)
    assert len(result.history) < 6
    assert 1 <= result.best_epoch <= len(result.history)


def test_train_when_gradient_checkpointing_then_trains_and_restores_plain_mode():
    result = tiny_train(msgspec.structs.replace(TINY_TRAIN, gradient_checkpointing=True))
    assert len(result.history) == 1
    assert not result.parts.model.vision_model.encoder.gradient_checkpointing


def test_train_when_pretrained_base_then_same_loop_runs(tmp_path: Path):
    first = tiny_train()
    first.parts.save(tmp_path / "base")
    result = tiny_train(msgspec.structs.replace(TINY_TRAIN, base=str(tmp_path / "base")))
    assert result.parts.tokenizer.get_vocab() == first.parts.tokenizer.get_vocab()
    assert result.history[0].step > 0


def test_clip_samples_when_a_text_is_empty_then_data_error_names_the_sample():
    with pytest.raises(ClipDataError, match="sample 1 has an empty text"):
        ClipSamples(
            images=np.zeros((2, 8, 8, 3), dtype=np.uint8),
            texts=[["hammer"], [""]],
            hard_negatives=[[], []],
            patterns=["hammer", "none"],
            direction=[1, 0],
        )


def test_tiny_splits_when_built_then_every_split_has_patterns_and_none():
    splits = tiny_splits()
    for split in ("train", "validation", "test"):
        assert "none" in splits[split].patterns
        assert len(set(splits[split].patterns)) >= 3
    assert splits["train"].images.shape[1:] == (64, 64, 3)
    assert TINY_MODEL.image_size == 32


def test_distinct_when_texts_repeat_then_each_kept_once_and_inverse_restores_order():
    texts = ["hammer", "none", "hammer", "doji", "none"]
    unique, inverse = _distinct(texts)
    assert unique == ["hammer", "none", "doji"]
    assert [unique[i] for i in inverse] == texts


def test_train_when_prompt_weight_positive_then_weights_differ_from_default_recipe():
    plain = tiny_train()
    with_prompts = tiny_train(msgspec.structs.replace(TINY_TRAIN, prompt_weight=1.0))
    assert TINY_TRAIN.prompt_weight == 0.0
    assert not torch.equal(
        plain.parts.model.visual_projection.weight,
        with_prompts.parts.model.visual_projection.weight,
    )


class _Payload:
    """An object a weights-only load must refuse (unpickling it would run code)."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("unpickled",))


def test_train_when_checkpoint_holds_a_pickled_object_then_refused_in_one_line(tmp_path: Path):
    torch.save({"model": _Payload()}, tmp_path / "last.pt")
    with pytest.raises(ClipError, match=r"last\.pt: not a checkpoint this trainer wrote") as info:
        tiny_train(msgspec.structs.replace(TINY_TRAIN, epochs=1), checkpoint_dir=tmp_path)
    assert "\n" not in str(info.value)
