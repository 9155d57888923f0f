"""The three engines on the tiny model, in process: streams submitted directly, no HTTP. A few tokens each."""

from __future__ import annotations

import asyncio
import gc
import math
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from fastapi_llama.cli import build_engine
from fastapi_llama.engine.base import Engine
from fastapi_llama.engine.continuous import ContinuousEngine, ContinuousLimits
from fastapi_llama.engine.naive import NaiveEngine
from fastapi_llama.engine.static import StaticEngine
from fastapi_llama.engine.stream import RequestStream
from fastapi_llama.engine.types import (
    EngineStats,
    FinishEvent,
    FinishReason,
    GenerationError,
    GenerationRequest,
    ModelInfo,
    SamplingParams,
    TokenEvent,
)
from fastapi_llama.loading import load
from fastapi_llama.settings import Settings

TIMEOUT = 60
PROMPTS = ["The quick brown fox", "Once upon a time", "def main():"]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model: Path) -> tuple[Any, Any]:
    return load(str(tiny_model))


@pytest.fixture(scope="module", params=["naive", "static", "continuous"])
def engine(request: pytest.FixtureRequest, model_and_tokenizer: tuple[Any, Any]) -> Iterator[Engine]:
    """Each engine built as the CLI builds it, started and warmed up once for the module."""
    model, tokenizer = model_and_tokenizer
    settings = Settings(batching=request.param, max_batch_size=4, batch_wait_ms=20)
    engine = build_engine(settings, model, tokenizer)
    engine.start()
    engine.warmup()
    yield engine
    engine.stop()


def make_stream(engine: Engine, prompt: str, max_new_tokens: int, **params: Any) -> RequestStream:
    ids = engine.tokenizer(prompt).input_ids
    request = GenerationRequest(f"r{time.monotonic_ns()}", ids, SamplingParams(max_new_tokens, **params))
    return RequestStream(request, engine.tokenizer, asyncio.get_running_loop())


async def read_all(stream: RequestStream) -> list[TokenEvent | FinishEvent]:
    async with asyncio.timeout(TIMEOUT):
        return [ev async for ev in stream.events()]


async def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def reference_greedy(model_and_tokenizer: tuple[Any, Any], prompt: str, n: int) -> list[int]:
    """What transformers' own greedy `generate` makes of the prompt, for comparison."""
    model, tokenizer = model_and_tokenizer
    ids = torch.tensor([tokenizer(prompt).input_ids])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False)
    return out[0, ids.shape[1] :].tolist()


def test_generates_max_new_tokens_then_finishes_with_length(engine, model_and_tokenizer):
    async def main() -> list[Any]:
        stream = make_stream(engine, PROMPTS[0], 4)
        engine.submit(stream)
        return await read_all(stream)

    events = asyncio.run(main())
    tokens = [ev for ev in events if isinstance(ev, TokenEvent)]
    done = events[-1]
    assert isinstance(done, FinishEvent) and tokens[-1].finish == done
    expected = reference_greedy(model_and_tokenizer, PROMPTS[0], 4)
    if done.reason == FinishReason.LENGTH:  # a random tiny model may also draw EOS early
        assert done.generated_tokens == len(tokens) == 4
    assert [t.id for t in tokens] == expected[: len(tokens)]
    assert done.generated_text == "".join(t.text for t in tokens if not t.special)
    assert done.inference_s > 0 and done.queue_s >= 0
    if not isinstance(engine, ContinuousEngine):  # the worker engines record each token's log-probability
        assert all(t.logprob is not None and math.isfinite(t.logprob) and t.logprob <= 0 for t in tokens)


def test_concurrent_requests_all_finish_and_the_snapshot_returns_to_zero(engine, model_and_tokenizer):
    async def main() -> list[list[Any]]:
        streams = [make_stream(engine, p, 3) for p in PROMPTS]
        for s in streams:
            engine.submit(s)
        results = await asyncio.gather(*(read_all(s) for s in streams))
        await wait_for(lambda: engine.snapshot() == EngineStats())
        return results

    for prompt, events in zip(PROMPTS, asyncio.run(main()), strict=True):
        ids = [ev.id for ev in events if isinstance(ev, TokenEvent)]
        assert ids == reference_greedy(model_and_tokenizer, prompt, 3)[: len(ids)]
        assert isinstance(events[-1], FinishEvent)


def test_snapshot_counts_the_running_and_the_waiting(engine):
    async def main() -> EngineStats:
        first, second = make_stream(engine, PROMPTS[0], 40), make_stream(engine, PROMPTS[1], 40)
        engine.submit(first)
        engine.submit(second)
        events = first.events()
        await asyncio.wait_for(anext(events), TIMEOUT)  # the first request is generating
        stats = engine.snapshot()
        await events.aclose()
        second.cancel()
        await wait_for(lambda: engine.snapshot() == EngineStats())
        return stats

    stats = asyncio.run(main())
    assert stats.queued + stats.running == 2 and stats.running >= 1
    assert stats.running_max_tokens >= 40 + 4
    if isinstance(engine, NaiveEngine):  # one at a time: the second waits
        assert (stats.queued, stats.running) == (1, 1)


def test_cancel_mid_generation_frees_the_engine(engine, model_and_tokenizer):
    model, _ = model_and_tokenizer
    steps = 0

    def count_step(*_: Any) -> None:
        nonlocal steps
        steps += 1

    async def main() -> tuple[RequestStream, list[Any]]:
        stream = make_stream(engine, PROMPTS[2], 500)
        engine.submit(stream)
        events = stream.events()
        for _ in range(2):
            await asyncio.wait_for(anext(events), TIMEOUT)
        await events.aclose()  # the client left
        await wait_for(lambda: engine.snapshot().running == 0)
        after = make_stream(engine, PROMPTS[0], 2)
        engine.submit(after)
        return stream, await read_all(after)

    hook = model.register_forward_hook(count_step)  # one call per forward step, whoever makes it
    try:
        stream, next_events = asyncio.run(main())
    finally:
        hook.remove()
    assert stream.cancelled and not stream.finished
    assert isinstance(next_events[-1], FinishEvent), "the engine serves the next request"
    # Both requests took a few steps; a cancelled request generated to its cap would have taken 500.
    assert 0 < steps < 100, f"{steps} forward steps: the engine kept generating for a cancelled request"


def test_describe_reports_the_models_dtype_and_device(engine):
    assert engine.describe() == ModelInfo(dtype="float32", device_type="cpu")


@pytest.mark.parametrize("mode", ["naive", "static", "continuous"])
def test_stop_ends_the_engine(model_and_tokenizer, mode):
    model, tokenizer = model_and_tokenizer
    engine = build_engine(Settings(batching=mode, max_batch_size=4, batch_wait_ms=20), model, tokenizer)
    engine.start()
    assert engine.healthy()
    t0 = time.monotonic()
    engine.stop()
    assert not engine.healthy() and time.monotonic() - t0 < 10


class BrokenModel:
    """A model whose `generate` fails, as a CUDA OOM does."""

    device = torch.device("cpu")

    def generate(self, **_: Any) -> None:
        raise RuntimeError("out of memory")


def test_a_failing_generate_fails_the_request_and_the_engine_keeps_serving(tiny_tokenizer):
    engine = NaiveEngine(BrokenModel(), tiny_tokenizer)
    engine.start()

    async def main() -> None:
        for _ in range(2):
            stream = make_stream(engine, "Hi", 4)
            engine.submit(stream)
            with pytest.raises(GenerationError, match="generation failed: out of memory"):
                await read_all(stream)
            assert engine.healthy()

    try:
        asyncio.run(main())
    finally:
        engine.stop()


def test_static_batches_requests_that_share_sampling_and_holds_the_rest(tiny_tokenizer):
    engine = StaticEngine(None, tiny_tokenizer, max_batch_size=3, batch_wait_ms=10)  # never started: no thread

    async def main() -> list[list[str]]:
        greedy = [make_stream(engine, "Hi", 2) for _ in range(3)]
        sampled = make_stream(engine, "Hi", 2, do_sample=True, temperature=0.7)
        cancelled = make_stream(engine, "Hi", 2)
        cancelled.cancel()  # its client left while it waited
        for s in (greedy[0], sampled, cancelled, greedy[1], greedy[2]):
            engine.submit(s)
        names = {id(s): n for n, s in [("g0", greedy[0]), ("g1", greedy[1]), ("g2", greedy[2]), ("s", sampled)]}
        batches = []
        while engine.waiting():
            batches.append([names[id(s)] for s in engine.next_batch()])
        return batches

    # Three gathered at a time (g0, s, the cancelled one, which is dropped); one sampling key per batch, the
    # others held for the next, ahead of the queue.
    assert asyncio.run(main()) == [["g0"], ["s"], ["g1", "g2"]]


@pytest.mark.parametrize(
    ("params", "sampling", "refused"),
    [
        (SamplingParams(4), False, []),
        (SamplingParams(4, do_sample=True, temperature=0.5), False, ["sampling"]),
        (SamplingParams(4, do_sample=True, temperature=0.5), True, []),
        (SamplingParams(4, do_sample=True, seed=3), True, ["seed"]),
        (SamplingParams(4, repetition_penalty=1.2), True, ["repetition_penalty"]),
        (SamplingParams(4, typical_p=0.5), True, ["typical_p"]),
    ],
    ids=["greedy", "sampling-off", "sampling-on", "seed", "repetition", "typical"],
)
def test_continuous_refuses_what_its_manager_cannot_honour(tiny_tokenizer, params, sampling, refused):
    limits = ContinuousLimits(
        max_batch_total_tokens=None, max_batch_prefill_tokens=64, max_batch_size=4, sampling=sampling
    )
    engine = ContinuousEngine(None, tiny_tokenizer, limits)
    assert [r.split(" ")[0] for r in engine.unsupported(params)] == refused
    assert NaiveEngine(None, tiny_tokenizer).unsupported(params) == []  # generate() honours them all


@pytest.mark.parametrize("mode", ["naive", "static"])
def test_debug_leak_requests_keeps_each_finished_requests_tokens_and_kv_cache(model_and_tokenizer, mode):
    """--debug-leak-requests, the leak the soak must catch: one entry per finished request, its own copy of its
    tokens and of each layer's keys and values over them (8 KiB per token on the tiny model); off, nothing."""
    model, tokenizer = model_and_tokenizer
    leaky = build_engine(Settings(batching=mode, batch_wait_ms=50, debug_leak_requests=True), model, tokenizer)
    assert build_engine(Settings(batching=mode), model, tokenizer).kept is None
    leaky.start()

    async def main() -> list[list[Any]]:
        streams = [make_stream(leaky, p, 6, ignore_eos=True) for p in PROMPTS]
        for s in streams:
            leaky.submit(s)
        return [await read_all(s) for s in streams]

    try:
        finished = asyncio.run(main())
    finally:
        leaky.stop()
    assert len(leaky.kept) == len(PROMPTS)
    layers = model.config.num_hidden_layers
    kept_tokens = sorted(entry[0][-6:].tolist() for entry in leaky.kept)
    assert kept_tokens == sorted([ev.id for ev in events if isinstance(ev, TokenEvent)] for events in finished)
    for sequence, *kv in leaky.kept:
        assert len(kv) == 2 * layers
        assert all(t.shape[-2] == sequence.shape[0] - 1 for t in kv)  # every position but the last token's
        # Its own storage, not a view that would keep the whole batch's tensor.
        assert all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in kv)
    per_token = sum(t.element_size() * t[:, 0].numel() for t in leaky.kept[0][1:])
    assert per_token == 2 * layers * model.config.hidden_size * 4  # float32 keys and values


def test_no_request_outlives_its_end(engine):
    """Whether its client left mid-generation or a stop sequence ended it, nothing keeps a request's stream (and
    the token events it holds) once the engine has moved on: continuous mode used to keep every abandoned one in
    transformers' result handlers, 64 per soak repetition."""

    async def main() -> list[weakref.ref]:
        left = [make_stream(engine, p, 200) for p in PROMPTS]
        stopped = make_stream(engine, PROMPTS[1], 200, stop=(" ",), ignore_eos=True)
        for s in [*left, stopped]:
            engine.submit(s)
        for s in left:
            events = s.events()
            await asyncio.wait_for(anext(events), TIMEOUT)
            await events.aclose()  # the client left
        await read_all(stopped)
        await wait_for(lambda: engine.snapshot() == EngineStats())
        after = make_stream(engine, PROMPTS[0], 2)  # a later request, once the engine has caught up
        engine.submit(after)
        await read_all(after)
        return [weakref.ref(s) for s in [*left, stopped]]

    refs = asyncio.run(main())
    gc.collect()
    assert [r() for r in refs] == [None] * len(refs)
    if isinstance(engine, ContinuousEngine):
        assert engine._manager.output_router.result_handlers == {}
        assert engine._manager.output_router.output_queue.empty()
