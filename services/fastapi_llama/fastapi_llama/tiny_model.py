"""Build the offline tiny Llama model: random weights, a byte-level BPE tokenizer trained on local text.

Nothing is downloaded. The training text is the source of Python's own standard library, so the build is the same
on every machine with the same Python; weights are seeded, so two builds give identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_OUT = Path(".cache/models/tiny-llama")
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
# Llama-2 chat format, so code written for the article's model works unchanged against the tiny one.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<<SYS>>\n{{ message['content'] }}\n<</SYS>>\n\n"
    "{% elif message['role'] == 'user' %}[INST] {{ message['content'] }} [/INST]"
    "{% else %} {{ message['content'] }} {{ eos_token }}{% endif %}"
    "{% endfor %}"
)
# A fixed list of stdlib modules: stable across patch releases, about 1 MB of English and code.
CORPUS_MODULES = [
    "argparse.py",
    "textwrap.py",
    "difflib.py",
    "pydoc.py",
    "inspect.py",
    "typing.py",
    "dataclasses.py",
    "functools.py",
    "subprocess.py",
    "tarfile.py",
    "zipfile/__init__.py",
    "email/message.py",
    "http/client.py",
    "json/__init__.py",
    "logging/__init__.py",
    "unittest/case.py",
    "statistics.py",
    "fractions.py",
]


@dataclass(frozen=True)
class TinyModelSpec:
    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4  # no GQA, like Llama-2-13B (and repeat_kv costs ~16 % of a CPU step)
    max_position_embeddings: int = 2048
    seed: int = 1234

    def fingerprint(self) -> str:
        payload = json.dumps({"spec": asdict(self), "python": sys.version_info[:2], "corpus": CORPUS_MODULES})
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def corpus_files() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [stdlib / name for name in CORPUS_MODULES if (stdlib / name).exists()]


def train_tokenizer(spec: TinyModelSpec):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(p) for p in corpus_files()], trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=spec.max_position_embeddings,
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(spec: TinyModelSpec, tokenizer):
    import torch
    from transformers import LlamaForCausalLM

    from fastapi_llama.shapes import Shape, llama_config  # it imports this module: here, not at the top

    torch.manual_seed(spec.seed)
    config = llama_config(Shape.of(spec), tokenizer, dtype="float32")
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def build(out: Path, spec: TinyModelSpec = TinyModelSpec(), force: bool = False) -> Path:
    stamp = out / "tiny-model.json"
    if not force and stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") == spec.fingerprint():
        print(f"tiny model up to date: {out}")
        return out
    t0 = time.perf_counter()
    tokenizer = train_tokenizer(spec)
    model = build_model(spec, tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    # safetensors writes its file 0600: readable by every user, like a model from the Hub, because the stack
    # test's containers (fastapi-llama as uid 1000) read this folder through a bind mount.
    for path in out.iterdir():
        path.chmod(0o644)
    n_params = sum(p.numel() for p in model.parameters())
    stamp.write_text(json.dumps({"fingerprint": spec.fingerprint(), "parameters": n_params, **asdict(spec)}, indent=2))
    print(f"tiny model built in {time.perf_counter() - t0:.1f}s: {out} ({n_params / 1e6:.1f} M parameters)")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to save the model (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild even if an identical build exists")
    args = parser.parse_args(argv)
    build(args.out, force=args.force)


if __name__ == "__main__":
    main()
