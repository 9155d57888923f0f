"""client.stream_request: one streamed request against a scripted server, turned into a RequestRecord."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from llm_loadtest.client import MAX_ERROR_BODY, RequestSpec, Target, stream_request
from llm_loadtest.http import Connection, Response
from llm_loadtest.records import RequestRecord
from tests.support.scripted_server import WAIT_S, Peer, ScriptedServer, chunk, chunked, head, sse

SPEC = RequestSpec(prompt="Hello", max_new_tokens=4, timeout_s=WAIT_S, users=3, model="m")
SSE_HEAD = head(content_type="text/event-stream", transfer_encoding="chunked")


def tgi_token(text: str) -> dict:
    return {"token": {"id": 1, "text": text, "logprob": 0.0, "special": False}, "generated_text": None, "details": None}


def tgi_final(text: str, generated: int, reason: str = "length") -> dict:
    return tgi_token(text) | {
        "generated_text": "...",
        "details": {"finish_reason": reason, "generated_tokens": generated},
    }


TGI_EVENTS = [sse(tgi_token("a")), sse(tgi_token("b")), sse(tgi_token("c")), sse(tgi_final("d", 4))]


def stream_script(*parts: bytes):
    """A script: answers one request with an SSE head and the given chunks (one write each), then keeps the
    connection (recording any further request) until the client closes it."""

    def script(peer: Peer) -> None:
        peer.expect_request()
        peer.send(SSE_HEAD, *map(chunk, parts), b"0\r\n\r\n")
        peer.read_request()

    return script


def run(server: ScriptedServer, api: str = "tgi", spec: RequestSpec = SPEC, conn: Connection | None = None):
    conn = conn or Connection(server.url)
    try:
        return stream_request(conn, Target("t", server.url, api), spec)
    finally:
        conn.close()


def test_tgi_stream_ok():
    with ScriptedServer(stream_script(*TGI_EVENTS)) as server:
        r = run(server)
    assert (r.status, r.error, r.http_status) == ("ok", None, 200)
    assert (r.target, r.api, r.users, r.max_new_tokens) == ("t", "tgi", 3, 4)
    assert r.output_tokens == r.server_tokens == 4 and not r.token_mismatch
    assert r.finish_reason == "length"
    assert len(r.gaps_s) == 3 and all(g >= 0 for g in r.gaps_s)
    assert 0 < r.ttft_s <= r.e2e_s
    assert r.ttft_s + sum(r.gaps_s) == pytest.approx(r.e2e_s)  # the end is the final event's arrival
    assert r.itl_s == pytest.approx((r.e2e_s - r.ttft_s) / 3)
    (request,) = server.requests
    assert request.path == "/generate_stream"
    assert request.headers["x-request-id"] == r.request_id
    assert request.headers["accept"] == "text/event-stream"
    assert request.json() == {"inputs": "Hello", "parameters": {"max_new_tokens": 4, "details": True}}


def test_timings_follow_the_arrivals():
    """The server waits HOLD before the first token and HOLD between the 2nd and 3rd: the record shows both."""
    hold = 0.1

    def script(peer: Peer) -> None:
        peer.expect_request()
        peer.send(SSE_HEAD)
        time.sleep(hold)  # the scripted delays are what is measured here, not a synchronisation
        peer.send(chunk(TGI_EVENTS[0]), chunk(TGI_EVENTS[1]))
        time.sleep(hold)
        peer.send(chunked(TGI_EVENTS[2] + TGI_EVENTS[3]))
        peer.read_request()

    with ScriptedServer(script) as server:
        r = run(server)
    assert r.status == "ok" and r.output_tokens == 4
    assert r.ttft_s >= hold  # nothing can arrive before it is sent
    assert r.ttft_s + r.gaps_s[0] + r.gaps_s[1] >= 2 * hold
    assert r.gaps_s[2] == 0  # two events in one write arrive together
    assert r.gaps_s[1] > hold / 2 > r.gaps_s[0]  # the 2nd token was timed when it came, not with the 3rd
    assert r.e2e_s >= 2 * hold


def test_crlf_events_comments_and_data_with_a_space():
    body = (
        b": keep-alive\r\n\r\n"
        + b"data: "
        + sse(tgi_token("a"))[5:].replace(b"\n\n", b"\r\n\r\n")
        + b"event: message\r\ndata:"
        + sse(tgi_final("b", 2))[5:].replace(b"\n\n", b"\r\n\r\n")
    )
    with ScriptedServer(stream_script(body)) as server:
        r = run(server)
    assert (r.status, r.output_tokens, r.server_tokens) == ("ok", 2, 2)


def test_an_event_split_across_chunks():
    event = sse(tgi_final("a", 1))
    with ScriptedServer(stream_script(event[:7], event[7:-1], event[-1:])) as server:
        r = run(server)
    assert (r.status, r.output_tokens) == ("ok", 1)


def test_connection_is_kept_for_the_next_request():
    def script(peer: Peer) -> None:
        for _ in range(2):
            peer.expect_request()
            peer.send(SSE_HEAD + chunked(*TGI_EVENTS))
        peer.read_request()

    with ScriptedServer(script) as server:
        conn = Connection(server.url)
        first = stream_request(conn, Target("t", server.url), SPEC)
        second = stream_request(conn, Target("t", server.url), SPEC)
        conn.close()
    assert first.status == second.status == "ok" and first.request_id != second.request_id
    assert server.accepted == 1 and len(server.requests) == 2


def test_http_error_keeps_an_excerpt_of_the_body():
    body = b'{"error":"Model is overloaded","error_type":"overloaded"}' + b"x" * 3000

    def script(peer: Peer) -> None:
        peer.expect_request()
        peer.send(head("503 Service Unavailable", content_length=str(len(body))) + body)
        peer.expect_request()  # the body was drained: the connection serves the next request
        peer.send(SSE_HEAD + chunked(*TGI_EVENTS))
        peer.read_request()

    with ScriptedServer(script) as server:
        conn = Connection(server.url)
        r = stream_request(conn, Target("t", server.url), SPEC)
        after = stream_request(conn, Target("t", server.url), SPEC)
        conn.close()
    assert (r.status, r.http_status, r.output_tokens, r.ttft_s) == ("http_error", 503, 0, None)
    assert r.error.startswith('HTTP 503: {"error":"Model is overloaded"')
    assert len(r.error) == len("HTTP 503: ") + MAX_ERROR_BODY
    assert r.refused
    assert after.status == "ok" and server.accepted == 1


def test_error_event_mid_stream_is_a_stream_error():
    error = sse({"error": "Model is overloaded", "error_type": "overloaded"})
    with ScriptedServer(stream_script(TGI_EVENTS[0], TGI_EVENTS[1], error)) as server:
        r = run(server)
    assert (r.status, r.error, r.output_tokens) == ("stream_error", "overloaded: Model is overloaded", 2)
    assert not r.refused  # tokens had come: not a refusal


def test_error_event_before_any_token_is_a_refusal():
    with ScriptedServer(stream_script(sse({"error": "queue full", "error_type": "overloaded"}))) as server:
        r = run(server)
    assert (r.status, r.output_tokens, r.ttft_s, r.itl_s) == ("stream_error", 0, None, None)
    assert r.refused


def test_unparseable_event_is_a_stream_error():
    with ScriptedServer(stream_script(b"data:{oops\n\n")) as server:
        r = run(server)
    assert r.status == "stream_error" and r.error.startswith("unparseable event")


def test_stream_ending_before_the_final_event_is_a_connection_error():
    with ScriptedServer(stream_script(TGI_EVENTS[0], TGI_EVENTS[1])) as server:
        r = run(server)
    assert (r.status, r.error) == ("connection_error", "the stream ended before its final event")
    assert r.output_tokens == 2 and len(r.gaps_s) == 1


def test_server_dropping_the_connection_mid_stream_is_a_connection_error():
    def script(peer: Peer) -> None:
        peer.expect_request()
        peer.send(SSE_HEAD + chunk(TGI_EVENTS[0]))  # then closes mid-body

    with ScriptedServer(script) as server:
        r = run(server)
    assert (r.status, r.output_tokens) == ("connection_error", 1)
    assert r.error == "HTTPError: connection closed by the server"


def test_timeout_when_the_server_stalls():
    release = threading.Event()

    def script(peer: Peer) -> None:
        peer.expect_request()
        peer.send(SSE_HEAD + chunk(TGI_EVENTS[0]))
        release.wait(WAIT_S)

    with ScriptedServer(script) as server:
        r = run(server, spec=RequestSpec(prompt="Hello", max_new_tokens=4, timeout_s=0.25))
        release.set()
    assert (r.status, r.error, r.output_tokens) == ("timeout", "no end after 0.25s", 1)
    assert 0.25 <= r.e2e_s < 2
    assert not r.refused


def test_connection_refused_is_a_connection_error():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # bound, not listening
        url = f"http://127.0.0.1:{holder.getsockname()[1]}"
        r = stream_request(Connection(url), Target("t", url), SPEC)
    assert (r.status, r.http_status, r.output_tokens) == ("connection_error", None, 0)
    assert r.error.startswith("ConnectionRefusedError")
    assert r.refused


def openai_chunk(text: str, completion_tokens: int | None, finish_reason: str | None = None) -> bytes:
    usage = None if completion_tokens is None else {"prompt_tokens": 2, "completion_tokens": completion_tokens}
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    return sse({"id": "c", "object": "text_completion", "choices": [choice], "usage": usage})


def usage_only(completion_tokens: int) -> bytes:
    return sse({"id": "c", "choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": completion_tokens}})


def test_openai_merged_chunks_are_counted_by_the_running_usage():
    """vLLM merges tokens into one chunk when it lags; the running usage count says how many each carries."""
    parts = [
        openai_chunk(" a", 1),
        openai_chunk(" b c d", 4),  # three tokens in one chunk
        openai_chunk(" e", 5, finish_reason="length"),
        usage_only(5) + sse("[DONE]"),
    ]
    with ScriptedServer(stream_script(*parts)) as server:
        r = run(server, api="openai")
    assert (r.status, r.output_tokens, r.server_tokens, r.finish_reason) == ("ok", 5, 5, "length")
    assert len(r.gaps_s) == 4 and r.gaps_s[1] == r.gaps_s[2] == 0  # the merged tokens arrived together
    assert not r.token_mismatch
    (request,) = server.requests
    assert request.path == "/v1/completions"
    assert request.json()["model"] == "m" and request.json()["max_tokens"] == 4


def test_openai_merged_chunks_without_a_running_count_show_as_a_mismatch():
    parts = [openai_chunk(" a", None), openai_chunk(" b c d", None, "length"), usage_only(4), sse("[DONE]")]
    with ScriptedServer(stream_script(*parts)) as server:
        r = run(server, api="openai")
    assert (r.status, r.output_tokens, r.server_tokens) == ("ok", 2, 4)
    assert r.token_mismatch


def test_openai_stream_without_done_but_with_a_finish_reason_is_ok():
    with ScriptedServer(stream_script(openai_chunk(" a", 1), openai_chunk(" b", 2, "stop"))) as server:
        r = run(server, api="openai")
    assert (r.status, r.output_tokens, r.finish_reason) == ("ok", 2, "stop")


def test_openai_stream_without_a_finish_reason_or_done_is_a_connection_error():
    with ScriptedServer(stream_script(openai_chunk(" a", 1), openai_chunk(" b", 2))) as server:
        r = run(server, api="openai")
    assert r.status == "connection_error"


def test_openai_error_object_is_a_stream_error():
    error = sse({"error": {"message": "engine died", "type": "server_error", "code": 500}})
    with ScriptedServer(stream_script(openai_chunk(" a", 1), error)) as server:
        r = run(server, api="openai")
    assert (r.status, r.error, r.output_tokens) == ("stream_error", "engine died", 1)


class _Interrupted(Connection):
    """A connection whose stream is stopped by the load tester after one token (Ctrl-C, a killed greenlet)."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:1")
        self.closed = False

    def post_stream(self, path, payload, headers, timeout) -> Response:
        def body():
            yield sse(tgi_token("a"))
            raise KeyboardInterrupt

        return Response(200, {}, body())

    def close(self) -> None:
        self.closed = True


def test_a_request_stopped_by_the_load_tester_is_recorded_as_cancelled():
    cancelled: list[RequestRecord] = []
    conn = _Interrupted()
    with pytest.raises(KeyboardInterrupt):
        stream_request(conn, Target("t", "http://127.0.0.1:1"), SPEC, on_cancel=cancelled.append)
    (r,) = cancelled
    assert (r.status, r.output_tokens, r.http_status) == ("cancelled", 1, 200)
    assert conn.closed


HTML = b"<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>"


def test_an_html_page_with_200_is_not_an_event_stream():
    """A misrouted proxy answers 200 with a page: its own status, with the Content-Type and the page's start, not
    'the stream ended before its final event'; the body is read whole, so the connection serves the next request."""

    def script(peer: Peer) -> None:
        peer.expect_request()
        peer.send(head(content_type="text/html; charset=utf-8", content_length=str(len(HTML))) + HTML)
        peer.expect_request()
        peer.send(SSE_HEAD + chunked(*TGI_EVENTS))
        peer.read_request()

    with ScriptedServer(script) as server:
        conn = Connection(server.url)
        r = stream_request(conn, Target("t", server.url), SPEC)
        after = stream_request(conn, Target("t", server.url), SPEC)
        conn.close()
    assert (r.status, r.http_status, r.output_tokens, r.ttft_s) == ("not_event_stream", 200, 0, None)
    assert r.error.startswith("HTTP 200 with Content-Type text/html; charset=utf-8, not an event stream: <!DOCTYPE")
    assert r.refused  # users back off instead of looping on the page
    assert after.status == "ok" and server.accepted == 1


def test_a_body_without_content_type_or_events_is_not_an_event_stream():
    def script(peer: Peer) -> None:
        peer.expect_request()
        peer.send(head(content_length=str(len(HTML))) + HTML)
        peer.read_request()

    with ScriptedServer(script) as server:
        r = run(server)
    assert r.status == "not_event_stream" and r.error == "HTTP 200 without an event stream: " + HTML.decode()


def chat_chunk(delta: dict, finish_reason: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    return sse({"id": "c", "object": "chat.completion.chunk", "choices": [choice], "usage": None})


def test_chat_without_running_usage_counts_the_tokens_after_the_opener():
    """OpenAI and vLLM open with a role-only chunk (no token), then name no role."""
    parts = [
        chat_chunk({"role": "assistant", "content": ""}),
        chat_chunk({"content": " a"}),
        chat_chunk({"content": ""}),  # a token whose text is not printable yet (half of a UTF-8 character)
        chat_chunk({"content": " c"}, "length"),
        usage_only(3) + sse("[DONE]"),
    ]
    with ScriptedServer(stream_script(*parts)) as server:
        r = run(server, api="openai-chat")
    assert (r.status, r.output_tokens, r.server_tokens) == ("ok", 3, 3) and not r.token_mismatch


def test_chat_role_in_every_chunk_counts_a_token_without_text():
    """TGI's Messages API and fastapi-llama name the role in every chunk and send no opener: past the first chunk,
    a role with empty content is a token whose text is not printable yet, not an opener."""
    parts = [
        chat_chunk({"role": "assistant", "content": " a"}),
        chat_chunk({"role": "assistant", "content": ""}),
        chat_chunk({"role": "assistant", "content": " c"}),
        chat_chunk({"role": "assistant", "content": ""}),
        chat_chunk({"role": "assistant", "content": " e"}, "length"),
        usage_only(5) + sse("[DONE]"),
    ]
    with ScriptedServer(stream_script(*parts)) as server:
        r = run(server, api="openai-chat")
    assert (r.status, r.output_tokens, r.server_tokens) == ("ok", 5, 5) and not r.token_mismatch
