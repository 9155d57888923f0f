"""`make gpu-check`, run the way the tests can run it: the tiny shape on the CPU, through the same code a GPU
machine runs (shape without weights, random weights made on the device, every engine, the report)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from fastapi_llama.loading import load
from fastapi_llama.shapes import MARKER, SHAPES, write_shape
from llm_loadtest.records import read_records
from tests.support.servers import REPO, VENV_BIN

USERS, CAPS = (1, 4), (16, 32)


def test_shapes_count_their_parameters(tiny_model, tmp_path):
    """The 13B shape is Llama-2-13B (13,015,864,320 weights at its 32,000-token vocabulary), and the count the
    report quotes is the built model's own."""
    assert SHAPES["llama-2-13b"].parameters(32000) == 13_015_864_320
    out = write_shape("tiny", tiny_model, tmp_path / "shape")
    assert not list(out.glob("*.safetensors")), "a shape has no weights"
    model, tokenizer = load(str(out), device="cpu", random_weights=True)
    marker = json.loads((out / MARKER).read_text())
    assert marker["parameters"] == sum(p.numel() for p in model.parameters())
    assert model.config.num_hidden_layers == SHAPES["tiny"].layers and model.config.vocab_size == len(tokenizer)


def test_random_weights_never_choose_the_end(tiny_model, tmp_path):
    """Greedy decoding on random weights runs to the cap: the end-of-sequence logit is 0, every other maximum
    is positive. Without the zeroed row, random logits would pick EOS about once in a vocabulary's worth."""
    model, tokenizer = load(str(write_shape("tiny", tiny_model, tmp_path / "shape")), random_weights=True)
    generator = torch.Generator().manual_seed(7)
    ids = torch.randint(4, len(tokenizer), (64, 24), generator=generator)
    with torch.no_grad():
        logits = model(ids).logits
    eos = tokenizer.eos_token_id
    assert torch.all(logits[..., eos] == 0)
    assert not torch.any(logits.argmax(-1) == eos)
    assert torch.all(logits.max(-1).values > 0)


def test_device_that_is_not_there_fails_with_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = subprocess.run(
        [
            str(VENV_BIN / "llm-loadtest"),
            "gpu-check",
            "--shape",
            "tiny",
            "--device",
            "cuda",
            "--results",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "no CUDA device" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not list(tmp_path.iterdir()), "nothing started, nothing written"


@pytest.mark.slow
def test_make_gpu_check_on_the_cpu(tmp_path):
    """The CI form of the must-show command, shortened: report written, both engines at every step, every request
    run to its cap, the device in run.json."""
    args = f"--users {','.join(map(str, USERS))} --max-new-tokens {','.join(map(str, CAPS))} --results {tmp_path}"
    done = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "gpu-check",
            "SHAPE=tiny",
            "DEVICE=cpu",
            f"GPU_CHECK_ARGS={args} --no-prometheus",
        ],
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tmp_path / "latest"
    report = (run / "report.md").read_text()
    assert "tiny-shaped Llama model with random weights" in report
    assert json.loads((run / "run.json").read_text())["host"]["device"] == "cpu"
    records, bad = read_records(run / "requests.jsonl")
    assert bad == 0
    steps = {(r.target, r.max_new_tokens, r.users) for r in records}
    assert steps == {(e, c, u) for e in ("naive", "continuous") for c in CAPS for u in USERS}
    assert len(records) == 2 * len(CAPS) * sum(USERS)
    for r in records:
        assert (r.status, r.finish_reason, r.output_tokens) == ("ok", "length", r.max_new_tokens), r
