"""The CLIP model: a compact default built from a config, or any saved/pretrained CLIPModel; one code path."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import (
    AutoTokenizer,
    CLIPConfig,
    CLIPModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from vlm_engine.clip.errors import ClipError

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PREPROCESSOR_FILE = "preprocessor_config.json"
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789.,;:!?%+-/()'\""


class ClipModelConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Sizes of the compact default CLIP (both towers) and its tokenizer.

    The default (width 64, 2 vision + 1 text layers, ~0.2M parameters) was chosen by measurement
    (bench/bench_clip.py --sizes): on the bootstrap charts it learned faster and scored higher
    than width 128 with 4+2 layers, at a fraction of the latency.
    """

    image_size: PositiveInt = 128
    patch_size: PositiveInt = 16
    vision_layers: PositiveInt = 2
    vision_width: PositiveInt = 64
    vision_heads: PositiveInt = 4
    text_layers: PositiveInt = 1
    text_width: PositiveInt = 64
    text_heads: PositiveInt = 4
    projection_dim: PositiveInt = 64
    max_text_tokens: Annotated[int, msgspec.Meta(ge=8)] = 32
    vocab_size: Annotated[int, msgspec.Meta(ge=32)] = 1000

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            msg = f"clip model: image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})"
            raise ValueError(msg)
        for width, heads, tower in (
            (self.vision_width, self.vision_heads, "vision"),
            (self.text_width, self.text_heads, "text"),
        ):
            if width % heads:
                msg = f"clip model: {tower}_width ({width}) must be a multiple of {tower}_heads ({heads})"
                raise ValueError(msg)


class ImagePreprocessor:
    """uint8 NHWC chart images -> normalised float NCHW tensors at the model's input size."""

    def __init__(
        self,
        *,
        size: int,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
    ) -> None:
        self.size = size
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._mean = torch.tensor(self.mean).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(self.std).view(1, 3, 1, 1) * 255.0
        # (v - mean) / std for every uint8 value v, per channel, in the same float32 arithmetic as
        # the tensor path: a table lookup gives bit-identical inputs at a fraction of the cost.
        mean32 = self._mean.view(3).numpy().astype(np.float32)
        std32 = self._std.view(3).numpy().astype(np.float32)
        levels = np.arange(256, dtype=np.float32)
        self._lut = np.stack([(levels - mean32[c]) / std32[c] for c in range(3)])

    def __call__(
        self, images: npt.NDArray[np.uint8] | torch.Tensor, *, device: torch.device | None = None
    ) -> torch.Tensor:
        """Convert a (N, H, W, 3) uint8 batch; moves to device before the float maths."""
        if (
            isinstance(images, np.ndarray)
            and images.dtype == np.uint8
            and images.ndim == 4
            and images.shape[1:] == (self.size, self.size, 3)
            and (device is None or device.type == "cpu")
        ):
            return self._lookup(images)
        batch = (
            torch.from_numpy(np.ascontiguousarray(images))
            if isinstance(images, np.ndarray)
            else images
        )
        if batch.ndim != 4 or batch.shape[-1] != 3:
            msg = f"images: expected shape (N, H, W, 3), got {tuple(batch.shape)}"
            raise ClipError(msg)
        if device is not None:
            batch = batch.to(device, non_blocking=True)
        x = batch.permute(0, 3, 1, 2).float()
        if x.shape[-2] != self.size or x.shape[-1] != self.size:
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
            )
        mean = self._mean.to(x.device)
        std = self._std.to(x.device)
        return (x - mean) / std

    def raw(
        self, images: npt.NDArray[np.uint8] | torch.Tensor, *, device: torch.device | None = None
    ) -> torch.Tensor:
        """(N, 3, size, size) float pixels in 0..255, resized but not normalised: the input of a
        patch embedding that fold_into() made; the same as __call__ up to float rounding."""
        batch = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
        if batch.ndim != 4 or batch.shape[-1] != 3:
            msg = f"images: expected shape (N, H, W, 3), got {tuple(batch.shape)}"
            raise ClipError(msg)
        if device is not None:
            batch = batch.to(device, non_blocking=True)
        x = batch.permute(0, 3, 1, 2).float()  # a channels-last view: no copy before the conv
        if x.shape[-2] != self.size or x.shape[-1] != self.size:
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
            )
        return x

    def fold_into(self, conv: torch.nn.Conv2d) -> torch.nn.Conv2d:
        """A patch embedding that takes raw() pixels and gives what `conv` gives for normalised ones.

        Normalisation is affine per channel, so conv((x - m) / s) = conv'(x) + b' with
        w' = w / s and b' = b - sum(w * m / s); resizing commutes with it (its weights sum to 1).
        """
        mean = self._mean.view(1, 3, 1, 1).to(conv.weight.device, torch.float64)
        std = self._std.view(1, 3, 1, 1).to(conv.weight.device, torch.float64)
        weight = conv.weight.detach().double()
        bias = -(weight * mean / std).sum(dim=(1, 2, 3))
        if conv.bias is not None:
            bias = bias + conv.bias.detach().double()
        folded = torch.nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            kernel_size=conv.kernel_size,  # type: ignore[arg-type]
            stride=conv.stride,  # type: ignore[arg-type]
            padding=conv.padding,  # type: ignore[arg-type]
            bias=True,
        ).to(conv.weight.device)
        with torch.no_grad():
            folded.weight.copy_(weight / std)
            folded.bias.copy_(bias)  # type: ignore[union-attr]  # bias=True above
        return folded.to(conv.weight.dtype)

    def _lookup(self, images: npt.NDArray[np.uint8]) -> torch.Tensor:
        """The CPU fast path for charts already at the model's size: NCHW by table lookup."""
        chw = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        out = np.empty(chw.shape, dtype=np.float32)
        for c in range(3):
            np.take(self._lut[c], chw[:, c], out=out[:, c])
        return torch.from_numpy(out)

    def save(self, directory: Path) -> None:
        """Write preprocessor_config.json in the CLIPImageProcessor format."""
        config = {
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": True,
            "size": {"shortest_edge": self.size},
            "do_center_crop": True,
            "crop_size": {"height": self.size, "width": self.size},
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            "do_convert_rgb": True,
            "resample": 2,
        }
        (directory / PREPROCESSOR_FILE).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path, *, default_size: int) -> ImagePreprocessor:
        """Read preprocessor_config.json, or CLIP's defaults at default_size when there is none."""
        path = directory / PREPROCESSOR_FILE
        if not path.exists():
            return cls(size=default_size)
        try:
            raw: dict[str, Any] = json.loads(path.read_text())
            crop = raw.get("crop_size") or {}
            size = int(
                crop.get("height") or raw.get("size", {}).get("shortest_edge") or default_size
            )
            return cls(
                size=size, mean=raw.get("image_mean", CLIP_MEAN), std=raw.get("image_std", CLIP_STD)
            )
        except (ValueError, TypeError, AttributeError) as e:
            msg = f"{path}: not a valid image preprocessor config ({e})"
            raise ClipError(msg) from None


class ClipParts:
    """A CLIP model with its tokenizer and image preprocessor; what training and inference share."""

    def __init__(
        self, *, model: CLIPModel, tokenizer: PreTrainedTokenizerBase, preprocess: ImagePreprocessor
    ) -> None:
        self.model: Any = model  # transformers' own annotations are too loose for mypy strict
        self.tokenizer = tokenizer
        self.preprocess = preprocess

    @property
    def max_text_tokens(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    def tokenize(
        self, texts: Sequence[str], device: torch.device | None = None
    ) -> dict[str, torch.Tensor]:
        """Tokenize texts padded to the longest, truncated to the model's context."""
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_text_tokens,
            return_tensors="pt",
        )
        out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if device is not None:
            out = {k: v.to(device) for k, v in out.items()}
        return out

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings."""
        out = self.model.get_image_features(pixel_values=pixel_values)
        features = out.pooler_output if hasattr(out, "pooler_output") else out
        return F.normalize(features.float(), dim=-1)

    def text_features(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """L2-normalised text embeddings."""
        out = self.model.get_text_features(**tokens)
        features = out.pooler_output if hasattr(out, "pooler_output") else out
        return F.normalize(features.float(), dim=-1)

    def save(self, directory: Path) -> None:
        """save_pretrained the model, tokenizer and preprocessor into one directory."""
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        self.preprocess.save(directory)


def train_tokenizer(
    corpus: Iterable[str], *, vocab_size: int, max_tokens: int
) -> PreTrainedTokenizerFast:
    """A lower-cased byte-pair tokenizer trained on the label texts, wrapped <bos> ... <eos>."""
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.BPEDecoder()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=[PAD, UNK, BOS, EOS],
        initial_alphabet=list(_ALPHABET),
        show_progress=False,
    )
    tok.train_from_iterator(sorted(set(corpus)), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        special_tokens=[(BOS, tok.token_to_id(BOS)), (EOS, tok.token_to_id(EOS))],
    )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=max_tokens,
    )


def build_compact_clip(
    config: ClipModelConfig, tokenizer: PreTrainedTokenizerBase, *, seed: int
) -> ClipParts:
    """A freshly initialised compact CLIP sized by config, using tokenizer's vocabulary and end token."""
    torch.manual_seed(seed)
    clip_config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": config.text_width,
            "intermediate_size": config.text_width * 4,
            "num_hidden_layers": config.text_layers,
            "num_attention_heads": config.text_heads,
            "max_position_embeddings": config.max_text_tokens,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        vision_config={
            "image_size": config.image_size,
            "patch_size": config.patch_size,
            "hidden_size": config.vision_width,
            "intermediate_size": config.vision_width * 4,
            "num_hidden_layers": config.vision_layers,
            "num_attention_heads": config.vision_heads,
        },
        projection_dim=config.projection_dim,
    )
    model = CLIPModel(clip_config)
    return ClipParts(
        model=model, tokenizer=tokenizer, preprocess=ImagePreprocessor(size=config.image_size)
    )


def load_clip(name_or_path: str | Path) -> ClipParts:
    """Load a CLIPModel + tokenizer + preprocessor from a local directory (or a cached hub name); never downloads."""
    where = str(name_or_path)
    try:
        model: Any = CLIPModel.from_pretrained(where, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True)
    except Exception as e:  # a corrupt file raises anything (SafetensorError, EOFError, ...)
        detail = " ".join(str(e).split()) or type(e).__name__
        msg = f"{where}: cannot load a CLIP model and tokenizer offline ({type(e).__name__}: {detail})"
        raise ClipError(msg) from None
    if tokenizer.eos_token_id is not None:
        model.config.text_config.eos_token_id = tokenizer.eos_token_id
        model.text_model.eos_token_id = tokenizer.eos_token_id
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    size = int(model.config.vision_config.image_size)
    directory = Path(where)
    preprocess = (
        ImagePreprocessor.load(directory, default_size=size)
        if directory.is_dir()
        else ImagePreprocessor(size=size)
    )
    return ClipParts(model=model, tokenizer=tokenizer, preprocess=preprocess)


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
