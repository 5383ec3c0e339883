"""An LLM paraphraser for dataset captions: an OpenAI-compatible chat endpoint behind an on-disk cache."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

from vlm_engine.labels import ParaphraseConfig, ParaphraseFailed, usable_paraphrase

PARAPHRASE_PROMPT = (
    "Rewrite this description of a candlestick chart in different words. Keep every fact "
    "(pattern, direction, volume, indicators); add nothing. Answer with the sentence only."
)


class LlmParaphraser:
    """Paraphrases through an OpenAI-compatible chat endpoint, with an on-disk cache.

    Every failure (timeout, HTTP error, malformed JSON, refusal) raises ParaphraseFailed, so
    the text generator keeps the template text; `stats` counts outcomes by reason.
    """

    def __init__(self, *, config: ParaphraseConfig, api_key: str | None, cache_dir: Path) -> None:
        self.config = config
        self._api_key = api_key
        self._cache_dir = cache_dir
        self.stats: Counter[str] = Counter()

    def _cache_path(self, text: str) -> Path:
        key = json.dumps(
            [self.config.url, self.config.model, self.config.temperature, PARAPHRASE_PROMPT, text]
        )
        return self._cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()}.json"

    def __call__(self, text: str) -> str:
        path = self._cache_path(text)
        if path.exists():
            try:
                cached = json.loads(path.read_text())["text"]
            except (OSError, ValueError, KeyError, TypeError):
                cached = None
            if isinstance(cached, str):
                self.stats["cached"] += 1
                return cached
        answer = self._ask(text)
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"text": answer, "source": text}))
        tmp.replace(path)
        self.stats["ok"] += 1
        return answer

    def _count(self, reason: str, detail: str) -> str:
        self.stats[reason] += 1
        return f"paraphrase {reason}: {detail}"

    def _ask(self, text: str) -> str:
        body = json.dumps(
            {
                "model": self.config.model,
                "temperature": self.config.temperature,
                "messages": [
                    {"role": "system", "content": PARAPHRASE_PROMPT},
                    {"role": "user", "content": text},
                ],
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        url = self.config.url.rstrip("/") + "/chat/completions"
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_seconds) as response:
                raw = response.read()
        except TimeoutError as e:
            msg = self._count("timeout", str(e))
            raise ParaphraseFailed(msg) from None
        except urllib.error.HTTPError as e:
            msg = self._count("http_error", f"status {e.code}")
            raise ParaphraseFailed(msg) from None
        except (urllib.error.URLError, OSError) as e:
            reason = "timeout" if "timed out" in str(e) else "unreachable"
            msg = self._count(reason, str(e))
            raise ParaphraseFailed(msg) from None
        try:
            answer = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            msg = self._count("bad_response", repr(e))
            raise ParaphraseFailed(msg) from None
        if not usable_paraphrase(answer):
            msg = self._count("refusal", str(answer)[:80])
            raise ParaphraseFailed(msg)
        return str(answer).strip()


def make_paraphraser(config: ParaphraseConfig | None) -> LlmParaphraser | None:
    """The paraphrase hook a dataset config asks for (None when off)."""
    if config is None:
        return None
    return LlmParaphraser(
        config=config, api_key=os.environ.get(config.key_env), cache_dir=Path(config.cache_dir)
    )
