from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import CLIPConfig, CLIPModel

from tests.vlm_engine.clip_helpers import TINY_MODEL
from vlm_engine.clip import (
    ClipError,
    ClipModelConfig,
    build_compact_clip,
    load_clip,
    train_tokenizer,
)
from vlm_engine.clip.model import ImagePreprocessor

CORPUS = [
    "bullish engulfing after a decline",
    "hammer on heavy volume",
    "price rises over the next bars",
]


def test_train_tokenizer_when_label_corpus_then_wraps_texts_in_bos_eos_and_pads_apart():
    tok = train_tokenizer(CORPUS, vocab_size=100, max_tokens=16)
    ids = tok(["hammer on heavy volume", "hammer"], padding=True)["input_ids"]
    assert ids[0][0] == tok.bos_token_id
    assert ids[0][-1] == tok.eos_token_id
    assert ids[1][-1] == tok.pad_token_id != tok.eos_token_id
    assert (
        tok.unk_token_id not in tok(["zebra 42%"])["input_ids"][0]
    )  # every ASCII letter is in the alphabet


def test_train_tokenizer_when_same_corpus_twice_then_same_vocabulary():
    a = train_tokenizer(CORPUS, vocab_size=100, max_tokens=16)
    b = train_tokenizer(list(reversed(CORPUS)), vocab_size=100, max_tokens=16)
    assert a.get_vocab() == b.get_vocab()


def test_build_compact_clip_when_encoding_then_unit_embeddings_of_projection_size():
    parts = build_compact_clip(
        TINY_MODEL, train_tokenizer(CORPUS, vocab_size=100, max_tokens=16), seed=0
    )
    pixels = parts.preprocess(np.zeros((3, 64, 64, 3), dtype=np.uint8))
    assert pixels.shape == (3, 3, 32, 32)
    images = parts.image_features(pixels)
    texts = parts.text_features(parts.tokenize(CORPUS))
    assert images.shape == (3, 32)
    assert texts.shape == (3, 32)
    assert torch.allclose(images.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert parts.model.config.text_config.eos_token_id == parts.tokenizer.eos_token_id


def test_load_clip_when_saved_then_same_features(tmp_path: Path):
    parts = build_compact_clip(
        TINY_MODEL, train_tokenizer(CORPUS, vocab_size=100, max_tokens=16), seed=0
    )
    parts.save(tmp_path)
    loaded = load_clip(tmp_path)
    tokens = parts.tokenize(CORPUS)
    assert loaded.preprocess.size == 32
    with torch.no_grad():
        assert torch.allclose(
            parts.text_features(tokens), loaded.text_features(loaded.tokenize(CORPUS)), atol=1e-6
        )


def test_load_clip_when_pretrained_style_checkpoint_without_preprocessor_then_uses_its_image_size(
    tmp_path: Path,
):
    # A checkpoint as a user's local openai/clip-* copy would be: save_pretrained of CLIPModel + tokenizer.
    tok = train_tokenizer(CORPUS, vocab_size=100, max_tokens=16)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tok),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "eos_token_id": 2,
        },
        vision_config={
            "image_size": 48,
            "patch_size": 16,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
        },
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    parts = load_clip(tmp_path)
    assert parts.preprocess.size == 48
    assert (
        parts.model.text_model.eos_token_id == tok.eos_token_id
    )  # legacy eos id 2 replaced by the tokenizer's
    assert parts.image_features(
        parts.preprocess(np.zeros((1, 64, 64, 3), dtype=np.uint8))
    ).shape == (1, 16)


def test_load_clip_when_directory_missing_then_clip_error_names_it(tmp_path: Path):
    with pytest.raises(ClipError, match="nothing-here"):
        load_clip(tmp_path / "nothing-here")


def test_clip_model_config_when_image_not_multiple_of_patch_then_rejected():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ClipModelConfig(image_size=100, patch_size=16)


def test_image_preprocessor_when_wrong_shape_then_clip_error():
    with pytest.raises(ClipError, match="expected shape"):
        ImagePreprocessor(size=32)(np.zeros((2, 32, 32), dtype=np.uint8))


def test_preprocess_when_uint8_charts_at_model_size_then_lookup_path_equals_tensor_path() -> None:
    import numpy as np
    import torch

    from vlm_engine.clip.model import ImagePreprocessor

    pre = ImagePreprocessor(size=32)
    images = np.random.default_rng(3).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    fast = pre(images)  # numpy uint8 at the model's size: table lookup
    slow = pre(torch.from_numpy(images))  # tensor: permute, float, normalise
    assert fast.shape == (5, 3, 32, 32)
    assert torch.equal(fast, slow)


@pytest.mark.parametrize("size", [32, 48], ids=["at_model_size", "resized"])
def test_fold_into_when_raw_pixels_then_patch_embedding_equals_the_normalised_path(size: int):
    parts = build_compact_clip(
        TINY_MODEL, train_tokenizer(CORPUS, vocab_size=100, max_tokens=16), seed=0
    )
    conv = parts.model.vision_model.embeddings.patch_embedding
    images = np.random.default_rng(3).integers(0, 256, (4, size, size, 3), dtype=np.uint8)
    folded = parts.preprocess.fold_into(conv)
    with torch.no_grad():
        expected = conv(parts.preprocess(images))
        got = folded(parts.preprocess.raw(images))
    assert folded.bias is not None
    assert conv.bias is None  # CLIP's patch embedding has none: the fold adds the mean term
    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(conv(parts.preprocess.raw(images)), expected, atol=1e-2)
