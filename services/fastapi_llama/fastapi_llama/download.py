"""`fastapi-llama-download MODEL_ID`: fill the Hugging Face cache with a model once, before the servers start.

In the Compose stack fastapi-llama (uid 1000), TGI and vLLM (root) share one cache volume. Each downloading for
itself, the first to start would own the cache's folders and the others could not write their files beside them;
so the stack runs this first (as `model_cache`) and the servers read the cache offline. It downloads the
safetensors weights, configs and tokenizer files, and PyTorch `.bin` weights only where a repository has no
safetensors, and leaves every file readable by all users. A local directory is served as it is: nothing to
download. HF_TOKEN is read from the environment.
"""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

# Other formats of the same weights: several times the download, read by none of the three servers.
NEVER = ["*.gguf", "*.h5", "*.msgpack", "*.onnx", "*.onnx_data", "*.ot", "*.tflite", "original/*"]


def ignore_patterns(files: list[str]) -> list[str]:
    """What not to fetch from a repository holding `files`: PyTorch pickles when safetensors are there."""
    if any(f.endswith(".safetensors") for f in files):
        return [*NEVER, "*.bin", "*.pth", "*.pt"]
    return NEVER


def readable_by_all(folder: Path) -> None:
    """huggingface_hub writes some cache files 0600 (the tree listing, through a temporary file): the servers read
    them as other users, so every file and folder of the model's cache gets read (and folders search) for all."""
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        extra = stat.S_IRGRP | stat.S_IROTH | (stat.S_IXGRP | stat.S_IXOTH if path.is_dir() else 0)
        path.chmod(path.stat().st_mode | extra)


def download(model_id: str, revision: str | None = None) -> Path:
    if Path(model_id).is_dir():
        return Path(model_id)
    from huggingface_hub import HfApi, snapshot_download

    token = os.environ.get("HF_TOKEN") or None
    files = HfApi(token=token).list_repo_files(model_id, revision=revision)
    snapshot = Path(snapshot_download(model_id, revision=revision, token=token, ignore_patterns=ignore_patterns(files)))
    readable_by_all(snapshot.parents[1])  # models--org--name/snapshots/<sha>
    return snapshot


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="fastapi-llama-download", description=__doc__.splitlines()[0])
    p.add_argument("model_id", help="Hugging Face model id, or a local directory (nothing to do)")
    p.add_argument("--revision", default=os.environ.get("REVISION"), help="branch, tag or commit (env REVISION)")
    args = p.parse_args(argv)
    path = download(args.model_id, args.revision)
    print(f"fastapi-llama-download: {args.model_id} is in {path}", flush=True)


if __name__ == "__main__":
    main()
