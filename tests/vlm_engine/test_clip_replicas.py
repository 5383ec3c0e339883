"""Replicas: each data-parallel rank's share of a batch, and the single-process default."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from vlm_engine.clip.replicas import Replicas, Towers


def test_shard_when_two_ranks_then_distributed_sampler_split_of_each_global_batch():
    order = np.random.default_rng(7).permutation(96)
    batch_size, world = 16, 2
    for rank in range(world):
        sampler = DistributedSampler(
            range(len(order)), num_replicas=world, rank=rank, shuffle=False
        )
        expected = order[list(sampler)]  # the rank's share of the whole epoch, in order
        per_rank = batch_size // world
        for step in range(len(order) // batch_size):
            whole = order[step * batch_size : (step + 1) * batch_size]
            shard = Replicas(rank=rank, world=world).shard(whole)
            assert shard.tolist() == expected[step * per_rank : (step + 1) * per_rank].tolist()


def test_shard_when_every_rank_taken_then_the_global_batch_exactly_once():
    whole = np.arange(10, 26)
    shards = [Replicas(rank=r, world=4).shard(whole) for r in range(4)]
    assert sorted(np.concatenate(shards).tolist()) == whole.tolist()


def test_replicas_when_single_process_then_module_and_figures_pass_through_unchanged():
    replicas = Replicas()
    module = torch.nn.Linear(3, 2)
    cpu = torch.device("cpu")

    assert replicas.is_main
    assert not replicas.distributed
    assert replicas.wrap(module, cpu) is module
    assert replicas.mean(0.123456789, cpu) == 0.123456789
    assert replicas.from_main((0.25, 1 / 3), cpu) == (0.25, 1 / 3)
    assert replicas.same_everywhere(module)
    assert replicas.shard(np.arange(5)).tolist() == [0, 1, 2, 3, 4]


def test_towers_when_called_then_the_model_features_and_clamped_scale():
    from tests.vlm_engine.clip_helpers import TINY_MODEL
    from vlm_engine.clip.model import build_compact_clip, train_tokenizer

    tokenizer = train_tokenizer(["a hammer", "a doji"], vocab_size=64, max_tokens=16)
    parts = build_compact_clip(TINY_MODEL, tokenizer, seed=0)
    pixels = torch.zeros(2, 3, TINY_MODEL.image_size, TINY_MODEL.image_size)
    tokens = parts.tokenize(["a hammer", "a doji"])
    with torch.no_grad():
        parts.model.logit_scale.fill_(10.0)  # exp(10) > 100: clamped
        image, text, scale = Towers(parts.model)(pixels, tokens)
        assert torch.equal(
            torch.nn.functional.normalize(image, dim=-1), parts.image_features(pixels)
        )
        assert torch.equal(torch.nn.functional.normalize(text, dim=-1), parts.text_features(tokens))
    assert float(scale) == 100.0
