"""fastapi-llama-download, the stack's one download into the shared model cache."""

from __future__ import annotations

import subprocess

from fastapi_llama.download import ignore_patterns
from tests.support.servers import VENV_BIN


def test_pytorch_weights_are_skipped_only_beside_safetensors():
    both = ignore_patterns(["config.json", "model-00001-of-00003.safetensors", "pytorch_model-00001.bin"])
    assert "*.bin" in both and "*.gguf" in both
    bin_only = ignore_patterns(["config.json", "pytorch_model.bin"])
    assert "*.bin" not in bin_only  # the only weights there are


def test_a_local_folder_is_served_as_it_is(tiny_model):
    run = subprocess.run(
        [str(VENV_BIN / "fastapi-llama-download"), str(tiny_model)],
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"fastapi-llama-download: {tiny_model} is in {tiny_model}"


def test_every_cached_file_is_left_readable_by_the_other_users(tmp_path):
    from fastapi_llama.download import readable_by_all

    model = tmp_path / "models--org--name"
    (model / "trees").mkdir(parents=True)
    listing = model / "trees" / "abc.json"
    listing.write_text("[]")
    listing.chmod(0o600)  # as huggingface_hub leaves its tree listing
    (model / "trees").chmod(0o700)
    readable_by_all(model)
    assert listing.stat().st_mode & 0o777 == 0o644
    assert (model / "trees").stat().st_mode & 0o777 == 0o755
