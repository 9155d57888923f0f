from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model: Path) -> Any:
    """The tiny model's tokenizer (byte-level BPE, EOS `</s>` = 2): fast to load and offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)
