"""`fastapi-llama`: load the model, pick the batching engine, serve."""

from __future__ import annotations

import logging
import sys
import time
import tracemalloc
from typing import Any

import uvicorn

from fastapi_llama.app import create_app
from fastapi_llama.engine.base import Engine
from fastapi_llama.engine.continuous import ContinuousEngine, ContinuousLimits
from fastapi_llama.engine.naive import NaiveEngine
from fastapi_llama.engine.static import StaticEngine
from fastapi_llama.loading import load
from fastapi_llama.metrics import ServerMetrics
from fastapi_llama.service import Service
from fastapi_llama.settings import Settings, parse_settings

log = logging.getLogger("fastapi_llama")


CPU_KV_CACHE_TOKENS = 32768  # on the CPU, transformers would otherwise reserve most of the RAM
CPU_PAGE_SIZE = 32  # measured on the tiny model at 32 streams: 16-32 ≈ 840 tok/s, 64 ≈ 810, 256 ≈ 625


def build_engine(settings: Settings, model: Any, tokenizer: Any) -> Engine:
    if settings.batching == "static":
        return StaticEngine(
            model, tokenizer, settings.max_batch_size, settings.batch_wait_ms, settings.debug_leak_requests
        )
    if settings.batching == "continuous":
        on_cpu = model.device.type == "cpu"
        total = settings.max_batch_total_tokens or (CPU_KV_CACHE_TOKENS if on_cpu else None)
        limits = ContinuousLimits(
            max_batch_total_tokens=total,
            max_batch_prefill_tokens=settings.max_batch_prefill_tokens,
            max_batch_size=settings.max_batch_size,
            page_size=CPU_PAGE_SIZE if on_cpu else None,
            sampling=settings.continuous_sampling,
        )
        return ContinuousEngine(model, tokenizer, limits)
    return NaiveEngine(model, tokenizer, settings.debug_leak_requests)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = parse_settings(argv)
    except ValueError as exc:
        sys.exit(f"fastapi-llama: {exc}")
    if settings.debug_leak_requests:
        log.warning("--debug-leak-requests: every finished request's tensors are kept; memory grows without bound")
    t0 = time.perf_counter()
    model, tokenizer = load(
        settings.model_id, settings.revision, settings.dtype, settings.device, settings.random_weights
    )
    metrics = ServerMetrics()
    engine = build_engine(settings, model, tokenizer)
    engine.start()
    engine.warmup()
    if settings.tracemalloc and not tracemalloc.is_tracing():
        # From here on: what start-up allocated (the imports, the model) is not traced, so snapshots stay small
        # and cheap, and what a request leaves behind is.
        tracemalloc.start(settings.tracemalloc)
    log.info(
        "ready in %.1fs: %s engine, http://%s:%d",
        time.perf_counter() - t0,
        engine.name,
        settings.hostname,
        settings.port,
    )
    app = create_app(Service(settings, engine, tokenizer, metrics))
    uvicorn.run(app, host=settings.hostname, port=settings.port, log_level="warning", timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
