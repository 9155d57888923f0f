"""The offline tiny model: deterministic, loadable with HF_HUB_OFFLINE=1, a real Llama with eos/pad and a template."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from fastapi_llama.tiny_model import TinyModelSpec, build


def _digest(path: Path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_build_is_deterministic_and_idempotent(tmp_path, tiny_model, capsys):
    spec = TinyModelSpec()
    out = build(tmp_path / "a", spec)
    assert _digest(out) == _digest(tiny_model)
    assert (out / "tokenizer.json").read_text() == (tiny_model / "tokenizer.json").read_text()
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    build(out, spec)  # a second call reuses the build
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime
    assert "up to date" in capsys.readouterr().out


def test_loads_offline_as_a_llama(tiny_model):
    code = f"""
import json
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained({str(tiny_model)!r})
model = AutoModelForCausalLM.from_pretrained({str(tiny_model)!r})
chat = tok.apply_chat_template([{{"role": "user", "content": "hi"}}], tokenize=False)
print(json.dumps({{"arch": model.config.architectures, "params": sum(p.numel() for p in model.parameters()),
  "eos": tok.eos_token, "pad": tok.pad_token, "chat": chat, "bos": tok.bos_token,
  "roundtrip": tok.decode(tok("Grüße, 世界!").input_ids, skip_special_tokens=True)}}))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout.splitlines()[-1]
    )
    assert out["arch"] == ["LlamaForCausalLM"]
    assert 1e6 < out["params"] < 10e6
    assert (out["eos"], out["pad"], out["bos"]) == ("</s>", "<pad>", "<s>")
    assert out["chat"] == "<s>[INST] hi [/INST]"
    assert out["roundtrip"] == "Grüße, 世界!"  # byte-level BPE: any text round-trips
