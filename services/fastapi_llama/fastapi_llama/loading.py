"""Loading the model once, on the GPU when there is one. Gated Hub models read HF_TOKEN from the environment."""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def pick_dtype(name: str | None, device: torch.device) -> torch.dtype:
    if name is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}")
    return DTYPES[name]


def load(model_id: str, revision: str | None = None, dtype: str | None = None) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device()
    torch_dtype = pick_dtype(dtype, device)
    tokenizer = AutoTokenizer.from_pretrained(model_id, revision=revision)
    if tokenizer.pad_token_id is None:  # Llama-2 ships without one
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(
        model_id, revision=revision, dtype=torch_dtype, attn_implementation="sdpa"
    ).to(device)
    model.eval()
    log.info("loaded %s on %s as %s", model_id, device, torch_dtype)
    return model, tokenizer
