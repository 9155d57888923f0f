"""`fastapi-llama-download MODEL_ID`: fill the Hugging Face cache with a model once, before the servers start.

In the Compose stack fastapi-llama (uid 1000), TGI and vLLM (root) share one cache volume. Each downloading for
itself, the first to start would own the cache's folders and the others could not write their files beside them;
so the stack runs this first (as `model_cache`) and the servers read the cache offline. It downloads the
safetensors weights, configs and tokenizer files, and PyTorch `.bin` weights only where a repository has no
safetensors. A local directory is served as it is: nothing to download. HF_TOKEN is read from the environment.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# Other formats of the same weights: several times the download, read by none of the three servers.
NEVER = ["*.gguf", "*.h5", "*.msgpack", "*.onnx", "*.onnx_data", "*.ot", "*.tflite", "original/*"]


def ignore_patterns(files: list[str]) -> list[str]:
    """What not to fetch from a repository holding `files`: PyTorch pickles when safetensors are there."""
    if any(f.endswith(".safetensors") for f in files):
        return [*NEVER, "*.bin", "*.pth", "*.pt"]
    return NEVER


def download(model_id: str, revision: str | None = None) -> Path:
    if Path(model_id).is_dir():
        return Path(model_id)
    from huggingface_hub import HfApi, snapshot_download

    token = os.environ.get("HF_TOKEN") or None
    files = HfApi(token=token).list_repo_files(model_id, revision=revision)
    return Path(snapshot_download(model_id, revision=revision, token=token, ignore_patterns=ignore_patterns(files)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="fastapi-llama-download", description=__doc__.splitlines()[0])
    p.add_argument("model_id", help="Hugging Face model id, or a local directory (nothing to do)")
    p.add_argument("--revision", default=os.environ.get("REVISION"), help="branch, tag or commit (env REVISION)")
    args = p.parse_args(argv)
    path = download(args.model_id, args.revision)
    print(f"fastapi-llama-download: {args.model_id} is in {path}", flush=True)


if __name__ == "__main__":
    main()
