"""`llm-loadtest gpu-check`: the article's experiment on one GPU, with nothing downloaded.

A Llama model of Llama-2-13B's shape (fastapi_llama.shapes), its random weights made on the GPU in bf16, served by
fastapi-llama in naive and continuous mode and loaded with the article's caps: local mode (`bench`) on a model
shape instead of a model. `--shape tiny --device cpu` runs the same code on the CPU, which is how the tests keep it
working between the days a GPU is lent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from llm_loadtest.local import LocalConfig, bench
from llm_loadtest.processes import VENV_BIN
from llm_loadtest.sweep import SweepConfig

USERS = [1, 4, 16, 64]
ENGINES = ("naive", "continuous")
# One wave per step, requests cut at 60 s: naive at 64 users x 256 tokens would otherwise take 64 requests' time
# (minutes on a 13B model); the timeouts are counted, as the article's were at 300 users.
REQUEST_TIMEOUT_S = 60.0
BUDGET_S = 420.0  # steps not begun by then are skipped: the whole command must fit one 10-minute device call
# KV cache of the continuous engine: 64 users x (prompt + 256) tokens with room, ~27 GB on the 13B shape in bf16;
# without it transformers sizes the cache from free memory, which the naive engine's model is still taking.
CONTINUOUS_CACHE_TOKENS = 32768

# Run with the services' interpreter: the load tester itself never imports torch.
PROBE = """
import json, sys, torch
device = sys.argv[1]
facts = {"device": device, "torch": torch.__version__}
if device.startswith("cuda"):
    if not torch.cuda.is_available():
        sys.exit("no CUDA device visible to torch " + torch.__version__)
    p = torch.cuda.get_device_properties(torch.device(device))
    facts |= {"gpu": p.name, "gpu_memory_gib": round(p.total_memory / 2**30, 1), "cuda": torch.version.cuda}
print(json.dumps(facts))
"""


class GpuCheckError(RuntimeError):
    pass


@dataclass(frozen=True)
class GpuCheck:
    shape: str
    device: str
    tokenizer: Path  # the tiny model's directory: its tokenizer gives the shape its vocabulary
    models: Path = Path(".cache/models")

    @property
    def model_dir(self) -> Path:
        return self.models / f"shape-{self.shape}"

    def note(self, facts: dict[str, Any]) -> str:
        where = facts.get("gpu") or facts["device"]
        return (
            f"gpu-check: a {self.shape}-shaped Llama model with random weights, on {where}. It measures serving cost "
            "(time per token, batching, queueing), not text quality; the end-of-sequence logit is zeroed, so every "
            "output runs to its cap and tokens counted equal the cap unless a request failed."
        )


def build_shape(check: GpuCheck) -> Path:
    cmd = [str(VENV_BIN / "python"), "-m", "fastapi_llama.shapes", "--shape", check.shape]
    cmd += ["--tokenizer", str(check.tokenizer)]
    done = subprocess.run([*cmd, "--out", str(check.model_dir)], capture_output=True, text=True)
    if done.returncode != 0:
        raise GpuCheckError(f"building the {check.shape} shape failed: {done.stderr.strip()[-500:]}")
    print(f"  {done.stdout.strip()}", flush=True)
    return check.model_dir


def device_facts(device: str) -> dict[str, Any]:
    done = subprocess.run([str(VENV_BIN / "python"), "-c", PROBE, device], capture_output=True, text=True)
    if done.returncode != 0:
        raise GpuCheckError(f"device {device}: {done.stderr.strip().splitlines()[-1] if done.stderr else 'failed'}")
    return json.loads(done.stdout)


def run(check: GpuCheck, local: LocalConfig, sweep: SweepConfig) -> int:
    """Build the shape, read the device, then local mode's bench with every engine on random weights."""
    print(f"gpu-check: {check.shape} shape on {check.device}", flush=True)
    try:
        facts = device_facts(check.device)
        print(f"  device: {facts}", flush=True)
        model = build_shape(check)
    except GpuCheckError as exc:
        print(f"llm-loadtest gpu-check: {exc}", file=sys.stderr)
        return 1
    engine_args = ("--random-weights", "--device", check.device)
    engine_args += ("--max-batch-total-tokens", str(CONTINUOUS_CACHE_TOKENS))
    local = replace(local, model=str(model), engine_args=engine_args)
    return bench(local, replace(sweep, host_extra=facts, note=check.note(facts)))
