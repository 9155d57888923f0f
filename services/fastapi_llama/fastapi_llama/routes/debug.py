"""Debug routes for memory soaks, mounted only with --debug-memory or --tracemalloc and left out of the OpenAPI
document: what a soak reads between its repetitions, never part of TGI's API."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from fastapi_llama.memory import MemoryProbe

router = APIRouter(prefix="/debug", include_in_schema=False)


def get_probe(request: Request) -> MemoryProbe:
    return request.app.state.memory


ProbeDep = Annotated[MemoryProbe, Depends(get_probe)]


@router.get("/memory")
def memory(probe: ProbeDep, top: Annotated[int, Query(ge=0, le=100)] = 10) -> dict[str, Any]:
    """Resident memory and, under tracemalloc, the `top` sites that grew since the previous call. A plain `def`:
    a snapshot takes a while, and runs in the thread pool rather than on the event loop."""
    return asdict(probe.report(top))


@router.post("/memory/trim")
def trim(probe: ProbeDep) -> dict[str, Any]:
    """The allocator's free pages back to the OS (glibc's malloc_trim(0), or jemalloc's purge); resident memory
    before and after."""
    return asdict(probe.trim())
