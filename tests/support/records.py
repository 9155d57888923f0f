"""Hand-made request records for tests of the figures derived from them."""

from __future__ import annotations

from llm_loadtest.records import RequestRecord


def rec(
    status: str = "ok",
    *,
    start: float = 0.0,
    ttft: float | None = 0.1,
    e2e: float = 1.0,
    tokens: int = 10,
    server: int | None = None,
    http_status: int | None = 200,
    target: str = "t",
) -> RequestRecord:
    itl = (e2e - ttft) / (tokens - 1) if ttft is not None and tokens >= 2 else None
    return RequestRecord(
        request_id=f"r{start}-{e2e}",
        target=target,
        api="tgi",
        users=4,
        max_new_tokens=16,
        status=status,
        start=start,
        ttft_s=ttft,
        e2e_s=e2e,
        itl_s=itl,
        output_tokens=tokens,
        server_tokens=tokens if server is None and status == "ok" else server,
        finish_reason="length" if status == "ok" else None,
        http_status=http_status,
        error=None if status == "ok" else "boom",
        gaps_s=[itl] * (tokens - 1) if itl is not None else [],  # tokens evenly from the first to the end
    )
