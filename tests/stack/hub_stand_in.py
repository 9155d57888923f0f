"""A stand-in for the Hugging Face Hub in the stack test: one model repository, served from a local folder, over
the part of the Hub's HTTP API that `huggingface_hub` uses to download a snapshot (model info, the file tree,
and `resolve` with the headers hf_hub_download reads: X-Repo-Commit, ETag, Content-Length). So the stack's
model_cache downloads for real, through HF_ENDPOINT, into the shared volume. Usage: hub_stand_in.py FOLDER REPO_ID
"""

from __future__ import annotations

import hashlib
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

PORT = 8000


class Repo:
    def __init__(self, folder: Path, repo_id: str) -> None:
        self.repo_id = repo_id
        self.files = {p.name: p for p in sorted(folder.iterdir()) if p.is_file()}
        self.etags = {name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in self.files.items()}
        self.sha = hashlib.sha1(json.dumps(self.etags, sort_keys=True).encode()).hexdigest()

    def info(self) -> dict:
        return {
            "id": self.repo_id,
            "sha": self.sha,
            "private": False,
            "siblings": [{"rfilename": f} for f in self.files],
        }

    def tree(self) -> list[dict]:
        return [
            {"type": "file", "path": f, "size": p.stat().st_size, "oid": self.etags[f]} for f, p in self.files.items()
        ]


def handler(repo: Repo) -> type[BaseHTTPRequestHandler]:
    api = f"/api/models/{repo.repo_id}/"
    resolve = f"/{repo.repo_id}/resolve/"

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.answer(body=False)

        def do_GET(self) -> None:
            self.answer(body=True)

        def answer(self, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            if path.startswith(api + "revision/"):
                self.send(json.dumps(repo.info()).encode(), "application/json", body)
            elif path.startswith(api + "tree/"):
                self.send(json.dumps(repo.tree()).encode(), "application/json", body)
            elif path.startswith(resolve) and path.split("/", 5)[-1] in repo.files:
                name = path.split("/", 5)[-1]
                self.send(repo.files[name].read_bytes(), "application/octet-stream", body, etag=repo.etags[name])
            else:
                self.send(b'{"error": "Repository Not Found"}', "application/json", body, status=404)

        def send(self, data: bytes, kind: str, body: bool, status: int = 200, etag: str | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Repo-Commit", repo.sha)
            if etag:
                self.send_header("ETag", f'"{etag}"')
            if status == 404:
                self.send_header("X-Error-Code", "RepoNotFound")
            self.end_headers()
            if body:
                self.wfile.write(data)

        def log_message(self, fmt: str, *args: object) -> None:
            print(f"hub: {fmt % args}", flush=True)

    return Handler


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", PORT), handler(Repo(Path(sys.argv[1]), sys.argv[2]))).serve_forever()
