"""Adapters that let `model.generate` feed RequestStreams: a streamer, a stopping criterion, a logprob recorder, and
the EOS guard of `min_tokens`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor, StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from fastapi_llama.engine.stream import RequestStream


class LogprobRecorder(LogitsProcessor):
    """Keeps the log-probabilities of each step (transformers runs custom processors before its sampling warpers,
    so these are the model's own distribution, after the repetition penalty)."""

    def __init__(self) -> None:
        self.last: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.last = torch.log_softmax(scores.float(), dim=-1)
        return scores


class EosGuard(LogitsProcessor):
    """Keeps EOS from being chosen in the rows whose request has fewer than its `min_new_tokens` tokens. Per row, so
    requests with different minimums share one `generate` call."""

    def __init__(self, streams: Sequence[RequestStream]) -> None:
        self._streams = streams

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, stream in enumerate(self._streams):
            if not stream.eos_allowed():
                scores[row, list(stream.eos_ids)] = -math.inf
        return scores


class StreamsStreamer(BaseStreamer):
    """Hands each step's tokens (one per row) to the row's stream, as soon as `generate` produces them."""

    def __init__(self, streams: Sequence[RequestStream], recorder: LogprobRecorder) -> None:
        self._streams = streams
        self._recorder = recorder
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() first pushes the prompt
            self._prompt_seen = True
            return
        tokens = value.reshape(-1).tolist()
        logprobs = self._recorder.last
        for row, (stream, token) in enumerate(zip(self._streams, tokens, strict=True)):
            if stream.done:
                continue
            logprob = float(logprobs[row, token]) if logprobs is not None else None
            stream.push(token, logprob)

    def end(self) -> None:
        for stream in self._streams:
            stream.finish_if_open()


class StreamsDone(StoppingCriteria):
    """Stops each row whose request is finished or cancelled, so a dead client frees the model."""

    def __init__(self, streams: Sequence[RequestStream]) -> None:
        self._streams = streams

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object) -> torch.BoolTensor:
        return torch.tensor([s.done for s in self._streams], dtype=torch.bool, device=input_ids.device)
