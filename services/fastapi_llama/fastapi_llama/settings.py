"""The service's settings: TGI launcher flag names, each mirrored by TGI's environment variable."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields

BATCHING_MODES = ("naive", "static", "continuous")


@dataclass(frozen=True)
class Settings:
    model_id: str = "meta-llama/Llama-2-13b-chat-hf"
    revision: str | None = None
    hostname: str = "127.0.0.1"
    port: int = 8000
    dtype: str | None = None
    device: str | None = None
    random_weights: bool = False
    max_concurrent_requests: int = 128
    max_input_tokens: int = 1024
    max_total_tokens: int = 2048
    payload_limit: int = 2_000_000
    batching: str = "naive"
    max_batch_size: int = 64
    batch_wait_ms: int = 50
    max_batch_total_tokens: int = 0
    max_batch_prefill_tokens: int = 4096
    continuous_sampling: bool = False
    debug_memory: bool = False
    tracemalloc: int = 0
    debug_leak_requests: bool = False

    @property
    def debug_memory_routes(self) -> bool:
        return self.debug_memory or self.tracemalloc > 0

    def validate(self) -> None:
        if self.max_input_tokens >= self.max_total_tokens:
            raise ValueError("--max-input-tokens must be less than --max-total-tokens")
        if self.max_concurrent_requests < 1:
            raise ValueError("--max-concurrent-requests must be at least 1")
        if self.max_batch_size < 1 or self.batch_wait_ms < 0 or self.max_batch_prefill_tokens < 1:
            raise ValueError("--max-batch-size and --max-batch-prefill-tokens must be >= 1, --batch-wait-ms >= 0")
        if self.device is not None and self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError("--device must be cpu, cuda or cuda:N")
        if self.batching not in BATCHING_MODES:
            raise ValueError(f"--batching must be one of {', '.join(BATCHING_MODES)}")
        if self.tracemalloc < 0:
            raise ValueError("--tracemalloc must be >= 0 (frames per traced allocation; 0: off)")
        if self.debug_leak_requests and self.batching == "continuous":
            raise ValueError(
                "--debug-leak-requests needs --batching naive or static (transformers' manager owns "
                "the continuous engine's KV cache)"
            )


# Flag -> (environment variable, help). TGI's names, except the host: HOSTNAME is set to the container id in
# every container (TGI issue #1156), so ours is prefixed.
_FLAGS: dict[str, tuple[str, str]] = {
    "model_id": ("MODEL_ID", "Hugging Face model id or local path. Gated models read HF_TOKEN from the environment."),
    "revision": ("REVISION", "Model revision (branch, tag or commit) on the Hub."),
    "hostname": ("FASTAPI_LLAMA_HOSTNAME", "Address to listen on. Use 0.0.0.0 in a container."),
    "port": ("PORT", "Port to listen on."),
    "dtype": ("DTYPE", "float16, bfloat16 or float32. Default: bfloat16 on a GPU, float32 on the CPU."),
    "device": ("DEVICE", "cuda, cuda:N or cpu. Default: cuda when there is a GPU, else cpu."),
    "random_weights": (
        "RANDOM_WEIGHTS",
        "Build the model from --model-id's config.json with random weights made on the device (a model shape from "
        "fastapi-llama-shape): measures serving cost, not text; greedy outputs run to their cap.",
    ),
    "max_concurrent_requests": (
        "MAX_CONCURRENT_REQUESTS",
        "Requests in flight (queued + running) before new ones get 429 / an overloaded event.",
    ),
    "max_input_tokens": ("MAX_INPUT_TOKENS", "Longest prompt accepted, in tokens."),
    "max_total_tokens": ("MAX_TOTAL_TOKENS", "Prompt + max_new_tokens limit per request, in tokens."),
    "payload_limit": ("PAYLOAD_LIMIT", "Largest request body accepted, in bytes (413 beyond)."),
    "batching": (
        "BATCHING",
        "How requests share the model: naive (one at a time, the article's baseline), static (padded batches "
        "gathered for --batch-wait-ms) or continuous (transformers' continuous batching: join and leave every step).",
    ),
    "max_batch_size": ("MAX_BATCH_SIZE", "static, continuous: most requests generated together."),
    "batch_wait_ms": ("BATCH_WAIT_MS", "static: how long the first request of a batch waits for company."),
    "max_batch_total_tokens": (
        "MAX_BATCH_TOTAL_TOKENS",
        "continuous: KV-cache capacity in tokens, shared by the running batch. 0: 32768 on the CPU; on a GPU, "
        "what fits in free memory (transformers decides).",
    ),
    "max_batch_prefill_tokens": (
        "MAX_BATCH_PREFILL_TOKENS",
        "continuous: most tokens one forward step processes (prompts being prefilled + one per decoding request).",
    ),
    "continuous_sampling": (
        "CONTINUOUS_SAMPLING",
        "continuous: honour temperature/top_k/top_p per request. Off, the batch decodes greedily and sampling "
        "requests get a 422; on, every step pays for per-request warpers (~35 %% of throughput on the CPU).",
    ),
    "debug_memory": (
        "DEBUG_MEMORY",
        "Debugging: serve GET /debug/memory (resident memory, and with --tracemalloc the allocation sites that grew "
        "since the previous call) and POST /debug/memory/trim (malloc_trim(0), or jemalloc's purge), outside the "
        "OpenAPI document. For soaks; never expose them.",
    ),
    "tracemalloc": (
        "TRACEMALLOC",
        "Debugging: trace Python's allocations with this many frames each from the end of start-up on (0: off), "
        "and serve the --debug-memory routes. Slows the service.",
    ),
    "debug_leak_requests": (
        "DEBUG_LEAK_REQUESTS",
        "Debugging, a deliberate leak: naive and static keep every finished request's KV cache and tokens for "
        "the life of the process, so that a soak can show it catches a leak. Never in production.",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastapi-llama",
        description="A FastAPI + transformers LLM server speaking TGI's HTTP API and metrics.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    defaults = Settings()
    for f in fields(Settings):
        env, help_text = _FLAGS[f.name]
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            env_on = os.environ.get(env, "").lower() in ("1", "true", "yes", "on")
            parser.add_argument(flag, action="store_true", default=env_on or default, help=f"{help_text} [env: {env}]")
            continue
        kind = int if isinstance(default, int) else str
        parser.add_argument(flag, type=kind, default=os.environ.get(env, default), help=f"{help_text} [env: {env}]")
    return parser


def parse_settings(argv: list[str] | None = None) -> Settings:
    args = build_parser().parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in fields(Settings)}
    for f in fields(Settings):  # env values arrive as strings
        default = getattr(Settings(), f.name)
        if isinstance(default, int) and not isinstance(default, bool):
            values[f.name] = int(values[f.name])
    settings = Settings(**values)
    settings.validate()
    return settings
