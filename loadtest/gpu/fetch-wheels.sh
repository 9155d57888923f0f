#!/usr/bin/env bash
# On a connected host: download the wheels `make gpu-check` needs on a GPU machine with Python 3.12, torch (with
# CUDA) and numpy but no internet: the runtime dependencies of fastapi-llama and llm-loadtest, closed over, at the
# versions installed in this checkout's .venv, for CPython 3.12 on manylinux x86-64. Left out: torch and what it
# brings (the machine's own are used), numpy, matplotlib's stack and scipy (the device carries 64 MiB at most;
# the report's charts and intervals are drawn afterwards with `llm-loadtest report DIR`). Usage: fetch-wheels.sh [DIR]
set -euo pipefail
out=${1:-.whl}
venv=${VENV:-.venv}
mkdir -p "$out"
"$venv/bin/python" - "$out/requirements.txt" <<'PY'
import os
import sys
from importlib import metadata
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canon

roots = ["fastapi-llama", "llm-loadtest"]
# torch's own closure and numpy are on the machine; matplotlib and scipy are optional there (charts and
# intervals are drawn later from the records).
skip = {canon(n) for n in ["torch", "numpy", "matplotlib", "scipy", "sympy", "networkx", "jinja2", "markupsafe", "mpmath",
                           "filelock", "fsspec", "triton", "setuptools"]}
pins, seen, todo = {}, set(), [(r, "") for r in roots]
while todo:  # (distribution, extra): `locust` needs `python-socketio[client]`, whose extra brings more
    name, extra = todo.pop()
    name = canon(name)
    if (name, extra) in seen or name in skip:
        continue
    seen.add((name, extra))
    dist = metadata.distribution(name)
    pins[name] = dist.version
    env = {"python_version": os.environ.get("PY_VERSION", "3.12"), "platform_machine": "x86_64",
           "sys_platform": "linux", "platform_system": "Linux", "extra": extra}
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(env):
            todo += [(req.name, "")] + [(req.name, e) for e in req.extras]
with open(sys.argv[1], "w") as f:
    f.writelines(f"{n}=={v}\n" for n, v in sorted(pins.items()) if n not in map(canon, roots))
    f.write("setuptools==%s\n" % metadata.version("setuptools"))  # builds the two projects there (editable)
PY
python3 -m pip download -q --no-deps --only-binary=:all: --implementation cp --python-version "${PY_VERSION:-3.12}" --abi "cp${PY_VERSION_NODOT:-312}" \
    --abi abi3 --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$out" -r "$out/requirements.txt" 2>&1 | grep -v "^WARNING: Location" || true
echo "$(ls "$out"/*.whl | wc -l) wheels, $(du -sm "$out" | cut -f1) MiB in $out (the device carries 64 MiB at most)"
