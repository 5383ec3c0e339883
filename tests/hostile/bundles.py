"""Bundles that pass their hashes but cannot be loaded: broken files with a re-hashed model card."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.daemon.ml_helpers import bundle_copy
from vlm_engine.bundle.bundle import _bundle_id, sha256_file


def rehash(bundle: Path) -> None:
    """Rewrite the card's sha256 of every file and the bundle id, as a careless rebuild would."""
    card_path = bundle / "model_card.json"
    card = json.loads(card_path.read_text())
    card["files"] = {name: sha256_file(bundle / name) for name in card["files"]}
    card["bundle_id"] = _bundle_id(card["files"])
    card_path.write_text(json.dumps(card))


def _truncate(name: str, keep: float = 0.5) -> Callable[[Path], None]:
    def damage(bundle: Path) -> None:
        path = bundle / name
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return damage


def _write(name: str, content: bytes) -> Callable[[Path], None]:
    def damage(bundle: Path) -> None:
        (bundle / name).write_bytes(content)

    return damage


# Each damage leaves a bundle whose card matches its files (verify_bundle's hashes pass).
DAMAGES: dict[str, Callable[[Path], None]] = {
    "weights_truncated": _truncate("clip/model.safetensors"),
    "weights_header_only": _truncate("clip/model.safetensors", keep=0.01),
    "weights_garbage": _write("clip/model.safetensors", b"\x00" * 64),
    "clip_config_not_json": _write("clip/config.json", b"{not json"),
    "clip_config_wrong_shape": _write(
        "clip/config.json", b'{"model_type": "clip", "projection_dim": -1}'
    ),
    "tokenizer_garbage": _write("clip/tokenizer.json", b'{"model": 1}'),
    "xgb_model_garbage": _write("xgb/model.json", b'{"learner": 7}'),
    "fusion_wrong_type": _write("fusion.json", b"[1, 2, 3]"),
}


def broken_bundle(tmp_path: Path, damage: str, *, tag: str = "") -> Path:
    """A private copy of the quick bundle with one damage applied and the card re-hashed."""
    bundle = bundle_copy(tmp_path, f"broken-{damage}{'-' + tag if tag else ''}")
    DAMAGES[damage](bundle)
    rehash(bundle)
    return bundle
