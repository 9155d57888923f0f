"""What services/tgi/README.md and services/vllm/README.md say about the official images agrees with the engines'
own behaviour (checked against their sources, cited in the READMEs) and with the flags docker-compose.yml passes."""

from __future__ import annotations

import re

import yaml

from tests.support.servers import REPO

TGI_README = (REPO / "services/tgi/README.md").read_text(encoding="utf-8")
VLLM_README = (REPO / "services/vllm/README.md").read_text(encoding="utf-8")


def command(service: str) -> str:
    return " ".join(yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"][service]["command"])


def test_tgi_readme_says_the_kv_budget_is_inferred_not_capped_by_the_flag():
    """TGI 3.x ignores --max-batch-total-tokens for flash-attention models (Llama-2) and uses what warm-up measured:
    the README must not present the flag as a ceiling, and must show the log lines a user sees."""
    if "--max-batch-total-tokens" in command("tgi"):
        assert "ignores `--max-batch-total-tokens`" in TGI_README
    assert "deprecated for Flash Attention models" in TGI_README and "Inferred max batch total tokens" in TGI_README
    assert not re.search(r"ceiling TGI lowers|a ceiling\b(?! to raise or lower)", TGI_README)


def test_vllm_readme_states_its_memory_and_admission():
    assert "about 40 GB" in VLLM_README and "26 GB" in VLLM_README and "--gpu-memory-utilization" in VLLM_README
    for flag in ("--max-num-queued-reqs", "--max-num-seqs"):
        assert f"`{flag}`" in VLLM_README
    assert "503" in VLLM_README and "admits" in VLLM_README


def test_the_vllm_profile_passes_the_limits_its_readme_names():
    """The README says the profile aligns vLLM with the others' limits: the flags are in its command, from the
    same variables as TGI's and fastapi-llama's."""
    vllm = command("vllm")
    assert "--max-num-queued-reqs=${MAX_CONCURRENT_REQUESTS:-128}" in vllm
    assert re.search(r"--max-num-seqs=\$\{MAX_BATCH_SIZE:-64\}", vllm)
    assert re.search(r"--gpu-memory-utilization=\$\{VLLM_GPU_MEMORY_UTILIZATION:-0\.9\}", vllm)
