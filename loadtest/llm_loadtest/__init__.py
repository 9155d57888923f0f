"""Load testing for LLM servers: Locust users, exact streaming metrics, sweeps and reports."""

__version__ = "0.1.0"
