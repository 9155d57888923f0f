"""Continuous batching through transformers' own manager (`model.init_continuous_batching`): requests join and
leave the running batch at every step. The paged KV cache and the scheduler are transformers'; this module only
maps TGI's limits onto them and routes each request's tokens to its stream."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from fastapi_llama.engine.base import Engine
from fastapi_llama.engine.stream import RequestStream
from fastapi_llama.engine.types import EngineStats, GenerationError, SamplingParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContinuousLimits:
    """TGI's launcher limits, as the manager understands them."""

    max_batch_total_tokens: int | None  # KV-cache capacity in tokens: num_blocks * page_size
    max_batch_prefill_tokens: int  # tokens one forward step may process: max_batch_tokens
    max_batch_size: int  # requests per step: max_requests_per_batch
    page_size: int | None = None  # tokens per KV page; None: transformers' default (256)
    sampling: bool = False  # per-request sampling; off, the manager decodes greedily, ~35 % faster on CPU


class ContinuousEngine(Engine):
    name = "continuous"
    supports_seed = False

    def __init__(self, model: Any, tokenizer: Any, limits: ContinuousLimits) -> None:
        super().__init__(model, tokenizer)
        self.limits = limits
        self._manager: Any = None
        self._eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else -1

    def _config(self) -> tuple[Any, Any]:
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        lim = self.limits
        page_size = lim.page_size or 256
        num_blocks = math.ceil(lim.max_batch_total_tokens / page_size) if lim.max_batch_total_tokens else None
        if lim.sampling:
            # Sampling is on for the manager as a whole; each request brings its own temperature / top-k / top-p,
            # and a greedy request asks top_k=1, which is argmax. The defaults are neutral but present, so that
            # per-request values have a processor to go to.
            vocab = self.model.config.vocab_size
            warpers = {"do_sample": True, "temperature": 1.0 - 1e-6, "top_k": vocab, "top_p": 1.0 - 1e-6}
        else:
            warpers = {"do_sample": False}
        generation = GenerationConfig(**warpers, eos_token_id=self._eos, pad_token_id=self.tokenizer.pad_token_id)
        cb = ContinuousBatchingConfig(
            num_blocks=num_blocks,
            page_size=page_size,
            max_batch_tokens=lim.max_batch_prefill_tokens,
            max_requests_per_batch=lim.max_batch_size,
            per_request_processors=lim.sampling,
            allow_block_sharing=False,  # benchmark prompts repeat; prefix sharing would flatter the engine
        )
        return generation, cb

    def start(self) -> None:
        generation, cb = self._config()
        self._manager = self.model.init_continuous_batching(generation_config=generation, continuous_batching_config=cb)
        self._manager.start()

    def stop(self) -> None:
        if self._manager is not None:
            self._manager.stop(block=True, timeout=10)

    def healthy(self) -> bool:
        return self._manager is not None and self._manager.is_running()

    def warmup(self) -> None:
        """The first request pays for cache set-up (seconds); pay it before serving."""
        ids = self.tokenizer("warm up").input_ids
        greedy = {"top_k": 1} if self.limits.sampling else {}
        rid = self._manager.add_request(ids, request_id="warmup", max_new_tokens=4, streaming=False, **greedy)
        while (out := self._manager.get_result(request_id=rid, timeout=60)) is not None and not out.is_finished():
            pass

    def unsupported(self, params: SamplingParams) -> list[str]:
        refused = []
        if params.min_new_tokens and not params.ignore_eos:  # moot with ignore_eos: EOS never ends the request
            refused.append("min_tokens (the manager cannot hold EOS back per request; ignore_eos can)")
        if params.do_sample and not self.limits.sampling:
            refused.append("sampling (temperature, top_k, top_p, do_sample): start with --continuous-sampling")
        elif params.do_sample and params.seed is not None:
            refused.append("seed (one random stream is shared by the whole batch)")
        if params.repetition_penalty not in (None, 1.0):
            refused.append("repetition_penalty")
        if params.typical_p not in (None, 1.0):
            refused.append("typical_p")
        return refused

    def snapshot(self) -> EngineStats:
        manager = self._manager
        bp = manager.batch_processor if manager is not None else None
        if bp is None:
            return EngineStats()
        active = list(bp.scheduler.active_requests.values())
        waiting = len(bp.scheduler.waiting_requests) + manager.input_queue.qsize()
        max_tokens = sum(len(s.initial_tokens) + (s.max_new_tokens or 0) for s in active)
        return EngineStats(waiting, len(active), max_tokens)

    def _abandon(self, rid: str) -> None:
        """Cancel a request and forget its result handler. Transformers drops a handler only once its request
        finishes, which a cancelled one never does: each kept its stream and every token event it was sent (the soak
        found 64 such streams per repetition, the running batch of clients that timed out). transformers has no
        public way to unregister, hence the router's own dict and lock."""
        router = self._manager.output_router
        self._manager.cancel_request(rid)
        with router._lock:
            router.result_handlers.pop(rid, None)

    def _drop_late_outputs(self) -> None:
        """An output already on its way when its request was abandoned finds no handler and lands in the manager's
        shared queue, which nothing reads once serving (the warm-up alone does): drop them, or they pile up."""
        while self._manager.get_result(timeout=0) is not None:
            pass

    def submit(self, stream: RequestStream) -> None:
        req = stream.request
        rid = req.request_id
        manager = self._manager
        self._drop_late_outputs()

        def on_output(out: Any) -> None:
            if stream.done:
                return
            if out.error is not None:
                stream.fail(GenerationError(f"generation failed: {out.error}"))
                return
            new = out.generated_tokens[stream.generated :]
            logprobs = out.logprobs[stream.generated :] if out.logprobs else []
            for i, token in enumerate(new):
                if stream.push(token, logprobs[i] if i < len(logprobs) else None):
                    break
            if stream.finished and not out.is_finished():  # a stop sequence: free the slot now
                self._abandon(rid)
            elif out.is_finished():
                stream.finish_if_open()

        p = req.params
        sampling: dict[str, Any] = {}
        if self.limits.sampling and not p.do_sample:
            sampling = {"top_k": 1}
        elif self.limits.sampling:
            warpers = (("temperature", p.temperature), ("top_k", p.top_k), ("top_p", p.top_p))
            sampling = {k: v for k, v in warpers if v is not None}
        manager.register_result_handler(rid, on_output)
        stream.on_cancel(lambda: self._abandon(rid))
        manager.add_request(
            req.input_ids,
            request_id=rid,
            max_new_tokens=p.max_new_tokens,
            streaming=True,
            eos_token_id=-1 if p.ignore_eos else self._eos,  # -1: no EOS for this request
            **sampling,
        )
