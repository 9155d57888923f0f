"""`make up`, `make ps` and `make down` for real: the kit's Compose file under a real Docker Engine, with
stand-ins only for the images no registry here serves (tests/stack/README.md). The tests run in file order on one
stack: healthy services, the Locust master and its workers, a load through the Compose network by service name,
the records on the host, Prometheus's targets and rules, then `make down`."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.stack.stack import RESULTS_UID, Stack
from tests.support.servers import REPO

UP_TIMEOUT_S = 600  # the first `make up` builds the kit's two images on the offline bases
HEALTHY_TIMEOUT_S = 240  # the stand-ins' start_period (3m) plus a minute
LOAD_TIMEOUT_S = 90
TARGETS = {"tgi": "http://tgi:80", "fastapi": "http://fastapi_llama:8000"}  # names on the Compose network
OK_PER_TARGET = 8


def records(results: Path) -> list[dict]:
    path = results / "requests.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def up(stack: Stack) -> Stack:
    t0 = time.monotonic()
    run = stack.make("up")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    services = stack.wait_healthy(HEALTHY_TIMEOUT_S)
    print(f"\nmake up: {time.monotonic() - t0:.0f}s to every service healthy")
    for s in services:
        print(f"  {s.name:<16} {s.state:<8} {s.health or '(no health check)'}")
    return stack


def test_make_up_starts_every_service_healthy(up: Stack):
    run = up.make("ps")
    assert run.returncode == 0, run.stderr
    print(run.stdout)
    names = {s.name for s in up.services()}
    expected = {"hub", "model_cache", "fastapi_llama", "tgi", "dcgm_exporter", "prometheus", "locust_master"}
    expected.add("locust_worker")
    assert names == expected, names  # grafana is left out: no registry here has its image
    for service in ("fastapi_llama", "tgi", "prometheus", "locust_master"):
        assert re.search(rf"{service}\b.*\(healthy\)", run.stdout), run.stdout


def test_the_locust_master_sees_its_workers(up: Stack):
    stats = httpx.get(f"{up.url('LOCUST_PORT')}/stats/requests", timeout=10).json()
    workers = stats.get("workers", [])
    print(f"\nLocust master: {len(workers)} workers connected: {[(w['id'], w['state']) for w in workers]}")
    assert len(workers) == 2 and all(w["state"] in ("ready", "stopped") for w in workers), workers


def swarm(up: Stack, host: str, users: int = 4) -> None:
    form = {"user_count": users, "spawn_rate": users, "host": host, "max_new_tokens": 32, "api": "tgi"}
    reply = httpx.post(f"{up.url('LOCUST_PORT')}/swarm", data=form, timeout=10)
    assert reply.status_code == 200 and reply.json().get("success"), reply.text


def stop(up: Stack) -> None:
    httpx.post(f"{up.url('LOCUST_PORT')}/stop", timeout=10)
    deadline = time.monotonic() + 30
    while httpx.get(f"{up.url('LOCUST_PORT')}/stats/requests", timeout=10).json()["state"] not in ("stopped", "ready"):
        assert time.monotonic() < deadline, "Locust did not stop"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def loaded(up: Stack) -> list[dict]:
    """A short load from the web UI's API against each model service, by its name on the Compose network."""
    # First one refused request per server, on its published port: the failure counters and their rule get data.
    for port in ("TGI_PORT", "FASTAPI_PORT"):
        bad = httpx.post(f"{up.url(port)}/generate", json={"inputs": "hi", "parameters": {"max_new_tokens": 0}})
        assert bad.status_code == 422 and "error" in bad.json(), bad.text
    for host in TARGETS.values():
        swarm(up, host)
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while sum(r["target"] == host and r["status"] == "ok" for r in records(up.results)) < OK_PER_TARGET:
            assert time.monotonic() < deadline, f"{host}: fewer than {OK_PER_TARGET} ok records\n{up.logs()}"
            time.sleep(1)
        stop(up)
    return records(up.results)


def test_a_load_streams_from_both_services_by_name(loaded: list[dict]):
    for host in TARGETS.values():
        ok = [r for r in loaded if r["target"] == host and r["status"] == "ok"]
        print(f"\n{host}: {len(ok)} ok of {sum(r['target'] == host for r in loaded)} records")
        assert len(ok) >= OK_PER_TARGET
        # Streamed: a first token before the end, more than one token, as many as the server says it sent.
        assert all(r["ttft_s"] is not None and r["ttft_s"] < r["e2e_s"] for r in ok)
        assert all(r["output_tokens"] > 1 and r["output_tokens"] == r["server_tokens"] for r in ok)


def test_the_records_land_on_the_host_as_the_users(up: Stack, loaded: list[dict]):
    path = up.results / "requests.jsonl"
    stat = path.stat()
    print(f"\n{path}: {len(loaded)} records, owner uid {stat.st_uid}")
    # Written by the Locust master as the user who ran make up (HOST_UID), in a folder that is theirs: they can
    # read it and remove it without root.
    assert (stat.st_uid, stat.st_gid) == (RESULTS_UID, RESULTS_UID)
    assert up.results.stat().st_uid == RESULTS_UID
    assert stat.st_mode & 0o400


def test_prometheus_has_every_target_up_and_the_rules_return_data(up: Stack, loaded: list[dict]):
    api = f"{up.url('PROMETHEUS_PORT')}/api/v1"
    targets = httpx.get(f"{api}/targets", timeout=10).json()["data"]["activeTargets"]
    print("\nPrometheus targets:")
    for t in targets:
        print(f"  {t['labels']['job']:<14} {t['labels']['instance']:<22} {t['health']} {t['lastError']}")
    assert {t["labels"]["job"] for t in targets} == {"fastapi_llama", "tgi", "loadtest", "dcgm"}
    deadline = time.monotonic() + 30  # a target found by DNS is scraped within an interval
    while not all(t["health"] == "up" for t in targets):
        assert time.monotonic() < deadline, [t for t in targets if t["health"] != "up"]
        time.sleep(2)
        targets = httpx.get(f"{api}/targets", timeout=10).json()["data"]["activeTargets"]
    # Rules run every 5 s over 1 m windows: once the client's rate has data, every rule has had its evaluations.
    assert query(api, "llm:client_output_tokens:rate1m", wait_s=60)
    assert query(api, "llm:server_failures:rate1m", wait_s=30)
    empty = [name for name in recording_rules() if not query(api, name)]
    print(f"  recording rules with data: {len(recording_rules()) - len(empty)} of {len(recording_rules())}")
    assert not set(empty) - WITHOUT_DATA_HERE, empty


# vLLM's alone (TGI's names have no TTFT or KV-cache usage): the vllm profile is not in this stack.
WITHOUT_DATA_HERE = {"llm:server_ttft_seconds:p50", "llm:server_ttft_seconds:p95", "llm:server_kv_cache_usage:ratio"}


def recording_rules() -> list[str]:
    names = []
    for path in sorted((REPO / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names += [r["record"] for r in group["rules"] if "record" in r]
    return names


def query(api: str, expr: str, wait_s: float = 0) -> list:
    deadline = time.monotonic() + wait_s
    while True:
        result = httpx.get(f"{api}/query", params={"query": expr}, timeout=10).json()["data"]["result"]
        if result or time.monotonic() > deadline:
            return result
        time.sleep(2)


def test_make_down_leaves_no_container_or_network(up: Stack):
    run = up.make("down")
    assert run.returncode == 0, run.stderr
    left = up.leftovers()
    print(f"\nmake down: containers left {left['container']}, networks left {left['network']}")
    assert left == {"container": [], "network": []}


@pytest.mark.parametrize("first, second", [("fastapi_llama", "tgi"), ("tgi", "fastapi_llama")])
def test_both_model_services_use_the_shared_cache_started_in_either_order(stack: Stack, first: str, second: str):
    """fastapi-llama runs as uid 1000, TGI as root. On an empty cache volume, whichever starts first, model_cache
    downloads the model once (from the hub stand-in) and both servers load it from the volume and generate."""
    assert stack.compose("down", "--volumes").returncode == 0  # an empty hf-cache
    try:
        for service in (first, second):
            run = stack.compose("up", "-d", "--wait", service, timeout=300)
            assert run.returncode == 0, run.stderr + stack.logs()
        download = stack.compose("logs", "--no-color", "model_cache").stdout
        assert "is in /data/hub/models--llmkit-test--tiny-llama/snapshots/" in download, download
        for service, port in (("fastapi_llama", "FASTAPI_PORT"), ("tgi", "TGI_PORT")):
            log = stack.compose("logs", "--no-color", service).stdout
            assert "Permission" not in log and "Traceback" not in log, log[-3000:]
            reply = httpx.post(
                f"{stack.url(port)}/generate",
                json={"inputs": "The cache", "parameters": {"max_new_tokens": 4}},
                timeout=60,
            )
            assert reply.status_code == 200 and reply.json()["generated_text"], reply.text
        print(f"\n{first} then {second}: one download, both servers generate")
    finally:
        stack.compose("down", "--volumes")
