"""docker-compose.yml, without Docker: valid against the Compose specification's schema and for Debian's
docker-compose, and meaning what it must (GPU ids, shm, loopback ports, health checks, no secrets)."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
import yaml
from jsonschema import Draft7Validator

from tests.conftest import require_binary
from tests.support.servers import REPO

COMPOSE = REPO / "docker-compose.yml"
SCHEMA = REPO / "tests" / "data" / "compose-spec.json"
PROFILES = ["gpu", "cpu", "vllm"]
_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?]([^}]*))?\}")


def raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(value, env: dict[str, str]):
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message}, with `env` as the environment."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, str):

        def sub(m: re.Match) -> str:
            name, default = m.group(1), m.group(2)
            if name in env and env[name] != "":
                return env[name]
            if "?" in m.group(0).split(name, 1)[1][:2]:
                raise KeyError(f"{name} is required: {default}")
            return default or ""

        return _VAR.sub(sub, value)
    return value


def resolved(env: dict[str, str] | None = None) -> dict:
    return interpolate(raw(), {"GRAFANA_ADMIN_PASSWORD": "test-only", **(env or {})})


def test_valid_against_the_compose_spec_schema():
    errors = sorted(Draft7Validator(json.loads(SCHEMA.read_text())).iter_errors(raw()), key=str)
    assert not errors, "\n".join(e.message for e in errors[:5])


@pytest.mark.parametrize("profile", PROFILES)
def test_debian_docker_compose_accepts_every_profile(profile, tmp_path):
    binary = require_binary("docker-compose")
    env = {**os.environ, "GRAFANA_ADMIN_PASSWORD": "test-only", "COMPOSE_PROFILES": profile}
    run = subprocess.run(
        [binary, "-f", str(COMPOSE), "--profile", profile, "config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    services = yaml.safe_load(run.stdout)["services"]
    expected = {
        "gpu": {"fastapi_llama", "tgi", "dcgm_exporter"},
        "cpu": {"fastapi_llama_cpu", "tgi_cpu"},
        "vllm": {"vllm"},
    }[profile]
    assert expected | {"prometheus", "grafana", "locust_master", "locust_worker"} <= set(services)


def _devices(service: dict) -> list[dict]:
    return service["deploy"]["resources"]["reservations"]["devices"]


def test_the_articles_gpu_layout():
    s = resolved()["services"]
    assert _devices(s["fastapi_llama"]) == [{"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}]
    assert _devices(s["tgi"])[0]["device_ids"] == ["1", "2"]
    assert "--num-shard=2" in s["tgi"]["command"]
    assert s["tgi"]["shm_size"] == "1gb"
    moved = resolved({"FASTAPI_GPU": "3", "TGI_GPU_A": "4", "TGI_GPU_B": "5"})["services"]
    assert _devices(moved["fastapi_llama"])[0]["device_ids"] == ["3"]
    assert _devices(moved["tgi"])[0]["device_ids"] == ["4", "5"]
    assert "--model-id=meta-llama/Llama-2-13b-chat-hf" in s["tgi"]["command"]
    assert s["fastapi_llama"]["environment"]["MODEL_ID"] == "meta-llama/Llama-2-13b-chat-hf"


def test_vllm_is_a_full_target():
    """Same model as the others, its own GPU, OpenAI port published on loopback, health-checked, scraped."""
    s = resolved()["services"]
    vllm = s["vllm"]
    assert vllm["profiles"] == ["vllm"] and re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+", vllm["image"])
    assert "--model=meta-llama/Llama-2-13b-chat-hf" in vllm["command"]
    gpus = {g for name in ("fastapi_llama", "tgi") for g in _devices(s[name])[0]["device_ids"]}
    assert _devices(vllm)[0]["device_ids"] == ["3"] and "3" not in gpus
    assert vllm["ports"] == ["127.0.0.1:8001:8000"] and "/health" in " ".join(vllm["healthcheck"]["test"])
    jobs = yaml.safe_load((REPO / "prometheus/prometheus.yml").read_text())["scrape_configs"]
    vllm_job = next(j for j in jobs if j["job_name"] == "vllm")
    assert vllm_job["static_configs"][0] == {"targets": ["vllm:8000"], "labels": {"server": "vllm"}}
    # The Locust master can be pointed at it.
    master = resolved({"LOCUST_HOST": "http://vllm:8000", "LOCUST_API": "openai"})["services"]["locust_master"]
    assert "--host=http://vllm:8000" in master["command"] and "--api=openai" in master["command"]


def test_official_tgi_image_is_pinned():
    for name in ("tgi", "tgi_cpu"):
        image = raw()["services"][name]["image"]
        assert image.startswith("ghcr.io/huggingface/text-generation-inference:")
        assert re.search(r":\d+\.\d+\.\d+", image), image


def test_host_ports_bind_to_loopback_by_default():
    for name, service in resolved()["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port}"
    opened = resolved({"BIND_ADDRESS": "0.0.0.0"})["services"]["grafana"]["ports"][0]
    assert opened.startswith("0.0.0.0:")


def test_every_long_running_service_has_a_health_check():
    services = raw()["services"]
    for name, service in services.items():
        if name in ("locust_worker", "dcgm_exporter"):
            continue
        check = service.get("healthcheck")
        assert check and check["test"][0] == "CMD", name
        assert any(x in " ".join(check["test"]) for x in ("/health", "/-/ready", "/api/health", ":8089/")), name
    for name in ("fastapi_llama", "tgi", "vllm"):  # a 13B download and load takes many minutes
        minutes = int(re.fullmatch(r"(\d+)m", services[name]["healthcheck"]["start_period"]).group(1))
        assert minutes >= 30, name


def test_no_secrets_in_the_file():
    text = COMPOSE.read_text()
    assert not re.search(r"hf_[A-Za-z0-9]{20,}", text)
    for name, service in raw()["services"].items():
        env = service.get("environment", {})
        if "HF_TOKEN" in env:
            assert env["HF_TOKEN"] == "${HF_TOKEN:-}", name  # only from the environment
    password = raw()["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert password.startswith("${GRAFANA_ADMIN_PASSWORD:?")  # compose refuses to start without one
    with pytest.raises(KeyError):
        interpolate(raw(), {})


def test_every_variable_is_documented_in_env_example():
    used = set(_VAR.findall(COMPOSE.read_text()))
    documented = {
        line.split("=", 1)[0]
        for line in (REPO / ".env.example").read_text().splitlines()
        if re.match(r"^[A-Z0-9_]+=", line)
    }
    names = {name for name, _ in used}
    assert names - documented == {"HF_TOKEN"}  # from the shell, never from a file


def test_prometheus_scrapes_every_server_and_the_load_tester():
    config = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert {"fastapi_llama:8000", "tgi:80", "vllm:8000", "locust_master:8089", "dcgm_exporter:9400"} <= targets
    services = raw()["services"]
    for target in targets:
        assert target.split(":")[0] in services


def test_containers_run_as_non_root():
    for dockerfile in (REPO / "services/fastapi_llama/Dockerfile", REPO / "loadtest/Dockerfile"):
        users = re.findall(r"^USER\s+(\S+)", dockerfile.read_text(), re.M)
        assert users and users[-1] not in ("root", "0"), dockerfile


def test_grafana_provisioning_points_at_the_dashboards():
    ds = yaml.safe_load((REPO / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    assert ds["uid"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((REPO / "grafana/provisioning/dashboards/dashboards.yml").read_text())["providers"][0]
    mounts = raw()["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    dashboard = (REPO / "grafana/dashboards/llm-serving.json").read_text()
    assert "${DS_" not in dashboard


def test_dashboard_json_is_what_the_generator_writes(tmp_path):
    out = tmp_path / "llm-serving.json"
    run = subprocess.run(["python", str(REPO / "grafana/build_dashboard.py"), str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert out.read_text() == (REPO / "grafana/dashboards/llm-serving.json").read_text(), (
        "the checked-in dashboard is stale: run python grafana/build_dashboard.py"
    )
