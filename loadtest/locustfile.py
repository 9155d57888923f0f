"""Locust file for LLM servers: `locust -f loadtest/locustfile.py --host http://127.0.0.1:8000`.

Web UI or headless, standalone or distributed (`--master` / `--worker`, or `--processes N`). Custom arguments
(also in the web UI): --api tgi|openai, --max-new-tokens, --prompts default|same|FILE, --request-timeout, --model,
--target-name (docs/cli.md lists them all). docs/metrics.md defines each figure.
"""

from llm_loadtest.locust_plugin import LLMUser, install

install()


class LLMServerUser(LLMUser):
    """Streams prompts to --host, one request after another."""
