"""A stand-in for the Hugging Face Hub on 127.0.0.1: it serves model repositories from local
folders through the few endpoints huggingface_hub's snapshot_download and hf_hub_download use
(point HF_ENDPOINT at it). Everything in a folder is one commit on `main`."""
from __future__ import annotations

import hashlib
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from stand_ins import BackgroundServer, GetHeadHandler


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class LocalHub(BackgroundServer):
    """`with LocalHub({"google/electra-small-discriminator": folder}) as hub:` then
    HF_ENDPOINT=hub.url; `hub.requests` lists (method, path) of every request served."""

    def __init__(self, repos: dict[str, Path]):
        self.repos = repos
        self.requests: list[tuple[str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @staticmethod
    def commit(name: str) -> str:
        return hashlib.sha1(name.encode()).hexdigest()

    def files(self, name: str) -> dict[str, bytes]:
        folder = self.repos[name]
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(GetHeadHandler):
            def answer(self, send_body: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                hub.requests.append((self.command, path))
                status, headers, body = hub.route(path)
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(key, value)
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

        return Handler

    def route(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) for one request path."""
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6:
            name, kind = "/".join(parts[2:4]), parts[4]
            if name in self.repos and kind == "revision":
                return self.json({"id": name, "modelId": name, "sha": self.commit(name), "private": False,
                                  "siblings": [{"rfilename": f} for f in self.files(name)]})
            if name in self.repos and kind == "tree":
                return self.json([{"type": "file", "oid": git_blob_id(content), "size": len(content), "path": f}
                                  for f, content in self.files(name).items()])
        elif len(parts) >= 5 and parts[2] == "resolve":
            name, filename = "/".join(parts[:2]), "/".join(parts[4:])
            if name in self.repos and filename in self.files(name):
                content = self.files(name)[filename]
                return 200, {"X-Repo-Commit": self.commit(name), "ETag": f'"{git_blob_id(content)}"',
                             "Content-Type": "application/octet-stream"}, content
            if name in self.repos:
                return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": self.commit(name)}, b"Entry not found"
        return 404, {"X-Error-Code": "RepoNotFound"}, b"Repository not found"

    @staticmethod
    def json(content: object) -> tuple[int, dict[str, str], bytes]:
        return 200, {"Content-Type": "application/json"}, json.dumps(content).encode()
