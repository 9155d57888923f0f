"""`make up`, `make ps` and `make down` for real: the kit's Compose file under a real Docker Engine, with
stand-ins only for the images no registry here serves (tests/stack/README.md). The tests run in file order on one
stack: healthy services, the Locust master and its workers, a load through the Compose network by service name,
the records on the host, Prometheus's targets and rules, then `make down`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.stack.stack import RESULTS_UID, Stack
from tests.support.prom import scrape, value
from tests.support.servers import REPO, VENV_BIN

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


def stop(up: Stack, timeout: float = 30) -> None:
    httpx.post(f"{up.url('LOCUST_PORT')}/stop", timeout=10)
    deadline = time.monotonic() + timeout
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
    up.seen_at = time.time()  # a moment Prometheus has data for: after make down and up it must still have it
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


def sweep_command(url: str, out: Path, *args: str) -> list[str]:
    return [str(VENV_BIN / "llm-loadtest"), "sweep", "--target", f"fastapi={url}", "--out", str(out), *args]


def test_a_model_container_killed_mid_sweep_comes_back_and_the_sweep_goes_on(up: Stack, tmp_path: Path):
    """The server's process dies (SIGKILL, as the OOM killer would) in the second step of a sweep from the host:
    the restart policy brings the container back, the sweep marks that step incomplete, keeps every finished
    record, and the next step runs complete."""
    out = tmp_path / "sweep"
    cmd = sweep_command(up.url("FASTAPI_PORT"), out, "--users", "1,2,3", "--duration", "12s", "--max-new-tokens", "16")
    sweep = subprocess.Popen([*cmd, "--warmup", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not any(r["users"] == 2 and r["status"] == "ok" for r in records(out)):
            assert time.monotonic() < deadline and sweep.poll() is None, sweep.communicate(timeout=10)
            time.sleep(0.2)
        pid = int(up.compose_inspect("fastapi_llama", "{{.State.Pid}}"))
        restarts = int(up.compose_inspect("fastapi_llama", "{{.RestartCount}}"))
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = sweep.communicate(timeout=240)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, stdout + stderr
    assert int(up.compose_inspect("fastapi_llama", "{{.RestartCount}}")) == restarts + 1
    steps = {s["users"]: s for s in json.loads((out / "summary.json").read_text())["steps"]}
    hit, after = steps[2], steps[3]
    print(
        f"\nkilled in step 2: {hit['ok']} ok, {hit['errors']} kept, complete={hit['complete']}; step 3 ok {after['ok']}"
    )
    assert not hit["complete"] and hit["ok"] >= 1 and sum(hit["errors"].values()) >= 1
    assert after["complete"] and after["ok"] > 0
    assert len(records(out)) == sum(s["requests"] for s in steps.values())
    assert "incomplete step" in (out / "report.md").read_text()


def test_a_locust_worker_killed_mid_load_is_noticed_by_the_master(up: Stack):
    """A worker container dies mid-load: the master marks it missing when its heartbeats stop and counts it
    (llm_loadtest_workers_lost_total; a headless sweep's step is flagged incomplete, tests/loadtest/test_faults.py),
    and the restart policy brings a worker back."""
    swarm(up, TARGETS["fastapi"], users=2)
    try:
        # Its process SIGKILLed, as a crash or the OOM killer would (`docker kill` counts as a manual stop, which
        # the restart policy respects).
        os.kill(int(up.compose_inspect("locust_worker", "{{.State.Pid}}")), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (lost := workers_lost(up)) < 1:
            assert time.monotonic() < deadline, up.compose("logs", "--no-color", "locust_master").stdout[-3000:]
            time.sleep(1)
    finally:
        # The master's stop waits for every worker's acknowledgement; it drops a missing one after 60 s more.
        stop(up, timeout=90)
    log = up.compose("logs", "--no-color", "locust_master").stdout
    assert "lost (no heartbeat)" in log, log[-3000:]
    deadline = time.monotonic() + 60
    while len(ready := [w for w in up_workers(up) if w["state"] != "missing"]) < 2:
        assert time.monotonic() < deadline, up_workers(up)
        time.sleep(1)
    print(f"\nworker killed: the master counted {lost:.0f} lost; {len(ready)} workers connected again")


def workers_lost(up: Stack) -> float:
    return value(scrape(up.url("LOCUST_PORT"))[0], "llm_loadtest_workers_lost_total")


def up_workers(up: Stack) -> list[dict]:
    return httpx.get(f"{up.url('LOCUST_PORT')}/stats/requests", timeout=10).json().get("workers", [])


def test_make_down_leaves_no_container_or_network(up: Stack):
    up.records_before_down = (up.results / "requests.jsonl").read_text().splitlines()
    run = up.make("down")
    assert run.returncode == 0, run.stderr
    left = up.leftovers()
    print(f"\nmake down: containers left {left['container']}, networks left {left['network']}")
    assert left == {"container": [], "network": []}


def test_make_up_again_keeps_prometheus_data_and_appends_records(up: Stack):
    run = up.make("up")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    up.wait_healthy(HEALTHY_TIMEOUT_S)
    api = f"{up.url('PROMETHEUS_PORT')}/api/v1"
    before = httpx.get(
        f"{api}/query", params={"query": "llm:client_output_tokens:rate1m", "time": up.seen_at}, timeout=10
    ).json()["data"]["result"]
    assert before, "Prometheus lost the data of the stack's first run (its volume)"
    swarm(up, TARGETS["tgi"], users=2)
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while len(records(up.results)) < len(up.records_before_down) + 2:
        assert time.monotonic() < deadline, up.logs()
        time.sleep(1)
    stop(up)
    lines = (up.results / "requests.jsonl").read_text().splitlines()
    print(
        f"\nafter make down and up: Prometheus still has {len(before)} series at the first run's time; records "
        f"{len(up.records_before_down)} -> {len(lines)}"
    )
    assert lines[: len(up.records_before_down)] == up.records_before_down  # appended, never overwritten
    run = up.make("down")
    assert run.returncode == 0, run.stderr


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
