"""A model *shape* without weights: a Llama config of known dimensions beside a tokenizer, served with
`--random-weights`.

Serving cost (memory traffic per token, batching, queueing) depends on a model's dimensions, not on what its
weights learned, so Llama-2-13B's shape measures the article's experiment on a GPU with nothing downloaded. The
tokenizer is the tiny model's (any tokenizer works; only the vocabulary size reaches the model).
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi_llama.tiny_model import TinyModelSpec

MARKER = "shape.json"  # what `--random-weights` needs beside config.json; no weights file
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    mlp: int
    max_positions: int

    @classmethod
    def of(cls, spec: TinyModelSpec) -> Shape:
        return cls(
            layers=spec.num_hidden_layers,
            hidden=spec.hidden_size,
            heads=spec.num_attention_heads,
            kv_heads=spec.num_key_value_heads,
            mlp=spec.intermediate_size,
            max_positions=spec.max_position_embeddings,
        )

    def parameters(self, vocab: int) -> int:
        """Weights of a Llama model of this shape (untied embeddings, no biases)."""
        head_dim = self.hidden // self.heads
        attention = self.hidden * head_dim * (2 * self.heads + 2 * self.kv_heads)
        per_layer = attention + 3 * self.hidden * self.mlp + 2 * self.hidden
        return self.layers * per_layer + 2 * vocab * self.hidden + self.hidden


SHAPES = {
    # The tiny model's dimensions: the same command, on the CPU, in CI.
    "tiny": Shape.of(TinyModelSpec()),
    # Llama-2-13B's config.json: 40 layers, hidden 5120, 40 heads (no GQA), MLP 13824, 4096 positions.
    "llama-2-13b": Shape(layers=40, hidden=5120, heads=40, kv_heads=40, mlp=13824, max_positions=4096),
}


def llama_config(shape: Shape, tokenizer: Any, **extra: Any) -> Any:
    """A Llama config of `shape` with `tokenizer`'s vocabulary and special tokens (the tiny model's build too)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.mlp,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=shape.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def write_shape(name: str, tokenizer_dir: Path, out: Path) -> Path:
    """`out` holds the shape's config.json, the tokenizer's files and the marker; no weights."""
    from transformers import AutoTokenizer

    shape = SHAPES[name]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    out.mkdir(parents=True, exist_ok=True)
    for f in TOKENIZER_FILES:
        if (tokenizer_dir / f).exists():
            shutil.copy2(tokenizer_dir / f, out / f)
    config = llama_config(shape, tokenizer)
    config.save_pretrained(out)
    marker = {"shape": name, **asdict(shape), "vocab": len(tokenizer), "parameters": shape.parameters(len(tokenizer))}
    (out / MARKER).write_text(json.dumps(marker, indent=2))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fastapi-llama-shape", description=__doc__)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-2-13b", help="default: %(default)s")
    parser.add_argument("--tokenizer", type=Path, required=True, help="a directory with a tokenizer (the tiny model)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the config and tokenizer")
    args = parser.parse_args(argv)
    out = write_shape(args.shape, args.tokenizer, args.out)
    marker = json.loads((out / MARKER).read_text())
    print(f"shape {args.shape}: {marker['parameters'] / 1e9:.2f} B parameters, config in {out}")


if __name__ == "__main__":
    main()
