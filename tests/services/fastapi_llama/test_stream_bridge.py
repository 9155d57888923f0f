"""RequestStream, the bridge from an engine's thread to the handler's event loop: order, finishing, cancelling."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from fastapi_llama.engine.stream import RequestStream, _eos_ids
from fastapi_llama.engine.types import (
    FinishEvent,
    FinishReason,
    GenerationError,
    GenerationRequest,
    SamplingParams,
    TokenEvent,
)

EOS = 2
TIMEOUT = 10


@pytest.fixture(scope="module")
def words(tiny_tokenizer: Any) -> list[int]:
    """Eight tokens: " the", " c", "at", " s", "at", " on", " the", " mat"."""
    return tiny_tokenizer(" the cat sat on the mat", add_special_tokens=False).input_ids


def make_stream(tokenizer: Any, max_new_tokens: int = 16, stop: tuple[str, ...] = ()) -> RequestStream:
    params = SamplingParams(max_new_tokens=max_new_tokens, stop=stop)
    return RequestStream(GenerationRequest("req-1", [1, 296], params), tokenizer, asyncio.get_running_loop())


def push_from_thread(stream: RequestStream, ids: Sequence[int]) -> tuple[threading.Thread, list[bool]]:
    """An engine thread: pushes `ids` until the stream says it is done, then closes it as an engine does."""
    answers: list[bool] = []

    def engine() -> None:
        for token in ids:
            answers.append(stream.push(token, logprob=-1.0))
            if answers[-1]:
                break
        stream.finish_if_open()

    thread = threading.Thread(target=engine)
    thread.start()
    return thread, answers


async def read_all(stream: RequestStream) -> list[TokenEvent | FinishEvent]:
    async def read() -> list[TokenEvent | FinishEvent]:
        return [ev async for ev in stream.events()]

    return await asyncio.wait_for(read(), TIMEOUT)


def run_pushed(tokenizer: Any, ids: Sequence[int], **params: Any) -> tuple[list[Any], list[bool], RequestStream]:
    async def main() -> tuple[list[Any], list[bool], RequestStream]:
        stream = make_stream(tokenizer, **params)
        thread, answers = push_from_thread(stream, ids)
        events = await read_all(stream)
        thread.join(TIMEOUT)
        return events, answers, stream

    return asyncio.run(main())


def test_tokens_from_another_thread_arrive_in_order(tiny_tokenizer, words):
    events, answers, _ = run_pushed(tiny_tokenizer, words, max_new_tokens=len(words))
    tokens = [ev for ev in events if isinstance(ev, TokenEvent)]
    assert [t.id for t in tokens] == words
    assert [t.index for t in tokens] == list(range(len(words)))
    assert "".join(t.text for t in tokens) == " the cat sat on the mat"
    assert answers == [False] * (len(words) - 1) + [True]  # push says "done" on the last token only


def test_last_token_carries_the_finish_which_then_ends_the_events(tiny_tokenizer, words):
    events, _, stream = run_pushed(tiny_tokenizer, words, max_new_tokens=3)
    assert [type(ev) for ev in events] == [TokenEvent, TokenEvent, TokenEvent, FinishEvent]
    assert events[0].finish is None and events[1].finish is None
    assert events[2].finish is events[3]
    done = events[3]
    assert (done.reason, done.generated_tokens, done.generated_text) == (FinishReason.LENGTH, 3, " the cat")
    assert done.queue_s >= 0 and done.inference_s >= 0
    assert stream.finished and stream.done


def test_length_cap_stops_a_longer_script(tiny_tokenizer, words):
    events, answers, stream = run_pushed(tiny_tokenizer, words * 3, max_new_tokens=5)
    assert len([ev for ev in events if isinstance(ev, TokenEvent)]) == 5
    assert len(answers) == 5 and answers[-1] is True
    assert events[-1].reason == FinishReason.LENGTH and stream.generated == 5


def test_stop_sequence_finishes_on_the_token_that_completes_it(tiny_tokenizer, words):
    events, answers, _ = run_pushed(tiny_tokenizer, words, max_new_tokens=16, stop=("sat",))
    done = events[-1]
    assert done.reason == FinishReason.STOP_SEQUENCE
    assert done.generated_text == " the cat sat"  # the stop sequence is kept, as TGI does
    assert answers[-1] is True and len(answers) == done.generated_tokens


def test_stop_sequence_spanning_two_tokens(tiny_tokenizer, words):
    events, _, _ = run_pushed(tiny_tokenizer, words, max_new_tokens=16, stop=("e ca",))
    assert events[-1].reason == FinishReason.STOP_SEQUENCE and events[-1].generated_text == " the cat"


def test_eos_finishes_and_stays_out_of_the_text(tiny_tokenizer, words):
    events, answers, _ = run_pushed(tiny_tokenizer, [*words[:3], EOS, *words[3:]], max_new_tokens=16)
    tokens = [ev for ev in events if isinstance(ev, TokenEvent)]
    assert [t.id for t in tokens] == [*words[:3], EOS]
    assert tokens[-1].special and tokens[-1].text == "</s>"
    assert events[-1].reason == FinishReason.EOS_TOKEN and events[-1].generated_text == " the cat"
    assert answers == [False, False, False, True]


def test_engine_that_stops_early_gets_a_length_finish(tiny_tokenizer, words):
    # generate() stopped at its own cap: the stream is closed by finish_if_open.
    events, _, _ = run_pushed(tiny_tokenizer, words[:2], max_new_tokens=16)
    assert events[-1].reason == FinishReason.LENGTH and events[-1].generated_tokens == 2


def test_fail_raises_in_events_after_the_tokens_already_sent(tiny_tokenizer, words):
    async def main() -> list[TokenEvent]:
        stream = make_stream(tiny_tokenizer)
        received: list[TokenEvent] = []

        def engine() -> None:
            stream.push(words[0])
            stream.fail(GenerationError("CUDA out of memory"))
            stream.push(words[1])  # a late token is ignored

        threading.Thread(target=engine).start()
        with pytest.raises(GenerationError, match="out of memory"):
            async with asyncio.timeout(TIMEOUT):
                async for ev in stream.events():
                    received.append(ev)
        return received

    assert [ev.id for ev in asyncio.run(main())] == [words[0]]


def test_fail_after_finish_is_ignored(tiny_tokenizer, words):
    async def main() -> list[Any]:
        stream = make_stream(tiny_tokenizer, max_new_tokens=1)
        stream.push(words[0])
        stream.fail(GenerationError("too late"))
        return await read_all(stream)

    events = asyncio.run(main())
    assert isinstance(events[-1], FinishEvent) and events[-1].generated_tokens == 1


def test_leaving_events_early_cancels_and_calls_on_cancel_once(tiny_tokenizer, words):
    calls: list[str] = []

    async def main() -> RequestStream:
        stream = make_stream(tiny_tokenizer)
        stream.on_cancel(lambda: calls.append("a"))
        stream.on_cancel(lambda: calls.append("b"))
        stream.push(words[0])
        stream.push(words[1])
        events = stream.events()
        first = await anext(events)
        assert first.id == words[0]
        await events.aclose()  # the client left
        stream.cancel()  # a second cancel (the engine's) calls nothing again
        return stream

    stream = asyncio.run(main())
    assert calls == ["a", "b"]
    assert stream.cancelled and stream.done and not stream.finished
    assert stream.push(words[2]) is True  # the engine learns it can stop


def test_a_finished_request_does_not_call_on_cancel(tiny_tokenizer, words):
    calls: list[str] = []

    async def main() -> None:
        stream = make_stream(tiny_tokenizer, max_new_tokens=2)
        stream.on_cancel(lambda: calls.append("cancelled"))
        stream.push(words[0])
        stream.push(words[1])
        await read_all(stream)

    asyncio.run(main())
    assert calls == []


def test_push_after_done_returns_true_and_sends_nothing(tiny_tokenizer, words):
    async def main() -> tuple[list[Any], bool, int]:
        stream = make_stream(tiny_tokenizer, max_new_tokens=1)
        stream.push(words[0])
        late = stream.push(words[1])
        stream.finish_if_open()  # already finished: no second finish
        events = await read_all(stream)
        await asyncio.sleep(0)  # anything queued after the finish would be in the queue now
        return events, late, stream._queue.qsize()

    events, late, left = asyncio.run(main())
    assert late is True
    assert [type(ev) for ev in events] == [TokenEvent, FinishEvent] and left == 0


def test_push_after_the_loop_closed_cancels_the_request(tiny_tokenizer, words):
    loop = asyncio.new_event_loop()
    params = SamplingParams(max_new_tokens=8)
    stream = RequestStream(GenerationRequest("req-1", [1], params), tiny_tokenizer, loop)
    loop.close()  # the server shut down under a running generation
    assert stream.push(words[0]) is True
    assert stream.cancelled


def test_queue_and_inference_times_split_at_the_first_token(tiny_tokenizer, words):
    async def main() -> FinishEvent:
        stream = make_stream(tiny_tokenizer, max_new_tokens=2)
        await asyncio.sleep(0.05)  # queued for a while: the engine has not started it
        stream.push(words[0])
        stream.push(words[1])
        return (await read_all(stream))[-1]

    done = asyncio.run(main())
    assert done.queue_s >= 0.04
    assert done.inference_s < done.queue_s


@pytest.mark.parametrize(
    ("eos", "expected"), [(None, set()), (2, {2}), ([2, 7], {2, 7}), ((3,), {3})], ids=["none", "int", "list", "tuple"]
)
def test_eos_ids_accepts_what_tokenizers_hold(eos, expected):
    class Tok:
        eos_token_id = eos

    assert _eos_ids(Tok()) == expected
