"""A stand-in for NVIDIA's dcgm-exporter in the stack test: its exposition format on :9400/metrics, for GPUs that
are not there. The metric names and labels are dcgm-exporter's (DCGM_FI_DEV_*, gpu, UUID, modelName, Hostname),
so the scrape job, the recording rules and the dashboards' GPU queries run against what a GPU host serves; the
values are fixed, and nothing reads them as measurements."""

from __future__ import annotations

import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GPUS = ("NVIDIA A100-SXM4-80GB", "NVIDIA RTX A4000", "NVIDIA RTX A4000")
# name, type, help, value per GPU: as dcgm-exporter's default counters describe them (FB_USED in MiB).
COUNTERS = (
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", 0),
    ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", 1024),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", 60.0),
)


def exposition(hostname: str) -> bytes:
    lines = []
    for name, kind, text, value in COUNTERS:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for i, model in enumerate(GPUS):
            labels = f'gpu="{i}",UUID="GPU-stand-in-{i}",device="nvidia{i}",modelName="{model}",Hostname="{hostname}"'
            lines.append(f"{name}{{{labels}}} {value}")
    return ("\n".join(lines) + "\n").encode()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = exposition(socket.gethostname()) if self.path == "/metrics" else b"dcgm-exporter stand-in\n"
        self.send_response(200 if self.path in ("/metrics", "/health", "/") else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:  # scraped every 2 s: keep the container's log readable
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 9400), Handler).serve_forever()
