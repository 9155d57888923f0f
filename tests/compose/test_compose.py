"""docker-compose.yml, without a Docker Engine: valid against the Compose specification's schema, rendered by
Docker Compose v2 in every profile, and meaning what it must (GPU ids, shm, loopback ports, health checks, the model
cache, the results folder's owner, no secrets). tests/stack/ runs it under a real engine."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
import yaml
from jsonschema import Draft7Validator

from tests.conftest import missing, require_binary
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


def rendered(*profiles: str, env: dict[str, str] | None = None, files: tuple[str, ...] = ()) -> dict:
    """The stack as Docker Compose v2 renders it (`docker compose config`: no engine needed), with `env` as the
    whole environment besides PATH and the Grafana password."""
    docker = require_binary("docker")
    base = {"PATH": os.environ["PATH"], "GRAFANA_ADMIN_PASSWORD": "test-only", **(env or {})}
    args = [docker, "compose", "-f", str(COMPOSE), *(a for f in files for a in ("-f", str(REPO / f)))]
    args += [*(a for p in profiles for a in ("--profile", p)), "config", "--format", "json"]
    run = subprocess.run(args, capture_output=True, text=True, env=base, cwd=REPO, timeout=60)
    if run.returncode != 0 and "is not a docker command" in run.stderr:
        missing("needs Docker Compose v2 as a CLI plugin (make system-deps)")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.parametrize("profile", PROFILES)
def test_compose_v2_renders_every_profile(profile):
    services = rendered(profile)["services"]
    expected = {
        "gpu": {"model_cache", "fastapi_llama", "tgi", "dcgm_exporter"},
        "cpu": {"model_cache_cpu", "fastapi_llama_cpu", "tgi_cpu"},
        "vllm": {"model_cache", "vllm", "dcgm_exporter"},
    }[profile]
    assert set(services) == expected | {"prometheus", "grafana", "locust_master", "locust_worker"}


def test_make_passes_each_profile_to_compose():
    """`make up PROFILES=gpu,vllm` must start both profiles: Compose reads `--profile gpu,vllm` as one profile of
    that name, which starts no model server at all."""
    run = subprocess.run(["make", "-n", "down", "PROFILES=gpu,vllm"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "docker compose --profile gpu --profile vllm down" in run.stdout.splitlines()


def test_make_up_needs_neither_the_venv_nor_the_docker_sdk():
    run = subprocess.run(["make", "-n", "up"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0 and ".venv" not in run.stdout and "pip install" not in run.stdout, run.stdout
    # The preflight imports the standard library only: -I ignores the venv and user site-packages.
    code = "import runpy, sys; sys.argv = ['preflight']; runpy.run_path('services/preflight.py', run_name='x')"
    imports = subprocess.run(["python3", "-I", "-c", code], cwd=REPO, capture_output=True, text=True)
    assert imports.returncode == 0, imports.stderr


def test_the_locust_master_writes_results_as_the_user_who_ran_make_up():
    """Locust's image runs as its own user, which cannot write a ./results the user owns (nor one Docker creates as
    root): the master runs as HOST_UID:HOST_GID, which make up exports, after creating the folder."""
    master = rendered("gpu", env={"HOST_UID": "4321", "HOST_GID": "4322"})["services"]["locust_master"]
    assert master["user"] == "4321:4322"
    recipe = re.search(r"^up:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.M).group(1)
    assert "mkdir -p" in recipe and "export HOST_UID" in (REPO / "Makefile").read_text()


def test_one_download_then_every_server_reads_the_cache_offline():
    """fastapi-llama (uid 1000) and TGI and vLLM (root) share hf-cache: each downloading for itself, the first would
    own the cache's folders. model_cache fills it once; every server waits for it and then reads it offline, all
    with the same hub cache folder (TGI's images name it by another variable)."""
    for profile, cache, servers in (
        ("gpu", "model_cache", ("fastapi_llama", "tgi")),
        ("vllm", "model_cache", ("vllm",)),
        ("cpu", "model_cache_cpu", ("fastapi_llama_cpu", "tgi_cpu")),
    ):
        services = rendered(profile)["services"]
        assert services[cache]["entrypoint"] == ["fastapi-llama-download"]
        for name in servers:
            s = services[name]
            assert s["depends_on"][cache]["condition"] == "service_completed_successfully", name
            assert s["environment"]["HF_HUB_OFFLINE"] == "1", name
            assert s["environment"]["HF_HUB_CACHE"] == s["environment"]["HUGGINGFACE_HUB_CACHE"] == "/data/hub"
            assert any(v["source"] == "hf-cache" and v["target"] == "/data" for v in s["volumes"]), name
            assert s["restart"] == "unless-stopped", name
        model = services[cache]["command"][0]
        assert all(
            model in " ".join(services[n].get("command") or []) + str(services[n]["environment"]) for n in servers
        )


def test_the_cpu_profile_is_whole():
    """Locust's default host, Prometheus's jobs and the docs name fastapi_llama and tgi: the cpu profile's servers
    answer to those names, and get the same limits as TGI's CPU image."""
    services = rendered("cpu")["services"]
    assert "--host=http://fastapi_llama:8000" in services["locust_master"]["command"]
    assert "fastapi_llama" in services["fastapi_llama_cpu"]["networks"]["default"]["aliases"]
    assert "tgi" in services["tgi_cpu"]["networks"]["default"]["aliases"]
    env = services["fastapi_llama_cpu"]["environment"]
    tgi = services["tgi_cpu"]["command"]
    assert (
        f"--max-input-tokens={env['MAX_INPUT_TOKENS']}" in tgi
        and f"--max-total-tokens={env['MAX_TOTAL_TOKENS']}" in tgi
    )


def test_hf_token_is_passed_only_when_set():
    # Compose renders a variable passed by name, absent from the shell, as null: not set in the container (an empty
    # HF_TOKEN="" is a token to some clients).
    unset = rendered("gpu", "vllm")["services"]
    assert all((s.get("environment") or {}).get("HF_TOKEN") is None for s in unset.values())
    given = rendered("gpu", env={"HF_TOKEN": "hf_test_only"})["services"]
    assert given["model_cache"]["environment"]["HF_TOKEN"] == "hf_test_only"
    # Only the downloader needs it: the servers read the cache offline.
    assert [n for n, s in given.items() if "HF_TOKEN" in (s.get("environment") or {})] == ["model_cache"]


def test_tgi_is_not_given_a_kv_budget_it_ignores():
    """TGI 3.x sizes its KV cache at warm-up for flash-attention models and ignores --max-batch-total-tokens."""
    assert not any("--max-batch-total-tokens" in a for a in rendered("gpu")["services"]["tgi"]["command"])


def test_gpu_panels_have_an_exporter_in_every_gpu_profile():
    assert "dcgm_exporter" in rendered("vllm")["services"]


def test_prometheus_cannot_be_stopped_over_http():
    assert not any("enable-lifecycle" in a for a in rendered("gpu")["services"]["prometheus"]["command"])


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
    assert vllm_job["dns_sd_configs"][0]["names"] == ["vllm"] and vllm_job["dns_sd_configs"][0]["port"] == 8000
    assert {"target_label": "server", "replacement": "vllm"} in vllm_job["relabel_configs"]
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
        if name in ("locust_worker", "dcgm_exporter") or name.startswith("model_cache"):  # no server: one-shot
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
            assert env["HF_TOKEN"] is None, name  # only from the environment, and only when set there
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
    assert names - documented == set()  # HF_TOKEN: from the shell, never from a file, passed by name


def test_prometheus_scrapes_every_server_and_the_load_tester():
    config = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    targets = {
        f"{name}:{sd['port']}"
        for job in config["scrape_configs"]
        for sd in job["dns_sd_configs"]
        for name in sd["names"]
    }
    assert targets == {"fastapi_llama:8000", "tgi:80", "vllm:8000", "locust_master:8089", "dcgm_exporter:9400"}
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
