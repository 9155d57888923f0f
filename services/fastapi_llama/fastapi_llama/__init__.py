"""The article's naive FastAPI + transformers LLM service, speaking TGI's HTTP API and metrics."""

__version__ = "0.1.0"
