"""Loading the model once, on the GPU when there is one. Gated Hub models read HF_TOKEN from the environment."""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def pick_device(name: str | None = None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def pick_dtype(name: str | None, device: torch.device) -> torch.dtype:
    if name is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}")
    return DTYPES[name]


def load(
    model_id: str,
    revision: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
    random_weights: bool = False,
) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)
    tokenizer = AutoTokenizer.from_pretrained(model_id, revision=revision)
    if tokenizer.pad_token_id is None:  # Llama-2 ships without one
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if random_weights:
        model = random_model(model_id, torch_dtype, torch_device, tokenizer)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            model_id, revision=revision, dtype=torch_dtype, attn_implementation="sdpa"
        ).to(torch_device)
    model.eval()
    log.info(
        "loaded %s on %s as %s%s", model_id, torch_device, torch_dtype, " (random weights)" if random_weights else ""
    )
    return model, tokenizer


def random_model(model_dir: str, dtype: torch.dtype, device: torch.device, tokenizer: Any) -> Any:
    """A model built from `model_dir`'s config.json alone (fastapi_llama.shapes), its random weights made directly
    on `device` in `dtype`: a 13B shape needs no download and no 26 GB on the host first.

    The output layer's rows for the end-of-sequence tokens are zeroed: their logit is exactly 0 while the largest
    of the others is positive (random), so greedy decoding never ends early and every request runs to its cap,
    like a benchmark's `ignore_eos`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    eos = tokenizer.eos_token_id
    with torch.no_grad():
        for token in eos if isinstance(eos, list) else [eos]:
            if token is not None:
                model.get_output_embeddings().weight[token].zero_()
    return model
