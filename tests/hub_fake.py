"""A fake Hugging Face Hub behind ``huggingface_hub.set_client_factory``: records what is uploaded."""

from __future__ import annotations

import base64
import json
from contextlib import contextmanager

import httpx2
import huggingface_hub
from huggingface_hub import constants

TOKEN = "hf_fake_token"


class FakeHub:
    def __init__(self):
        self.created: list[dict] = []
        self.uploaded: dict[str, bytes] = {}
        self.commits: list[dict] = []
        self.validated_cards: list[str] = []

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if path == "/api/whoami-v2":
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                return httpx2.Response(401, json={"error": "Invalid credentials in Authorization header"})
            return httpx2.Response(200, json={"name": "me", "type": "user", "orgs": []})
        if path == "/api/repos/create":
            body = json.loads(request.content)
            self.created.append(body)
            kind = {"dataset": "datasets/", "model": ""}.get(body.get("type", "model"), "")
            return httpx2.Response(200, json={"url": f"https://huggingface.co/{kind}{self._repo(body)}"})
        if path == "/api/validate-yaml":
            self.validated_cards.append(json.loads(request.content)["content"])
            return httpx2.Response(200, json={})
        if "/preupload/" in path:
            files = json.loads(request.content)["files"]
            return httpx2.Response(
                200,
                json={"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
            )
        if "/commit/" in path:
            lines = [json.loads(line) for line in request.content.decode().splitlines() if line.strip()]
            self.commits.append(lines[0]["value"])
            for line in lines[1:]:
                if line["key"] == "file":
                    self.uploaded[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
            repo = path.split("/commit/")[0].removeprefix("/api/")
            return httpx2.Response(
                200, json={"commitUrl": f"https://huggingface.co/{repo}/commit/{'0' * 40}", "commitOid": "0" * 40}
            )
        if request.method == "GET" and "/revision/" in path:
            return httpx2.Response(200, json={"sha": "0" * 40, "siblings": []})
        return httpx2.Response(404, json={"error": f"fake hub has no route for {request.method} {path}"})

    @staticmethod
    def _repo(body: dict) -> str:
        return f"{body.get('organization') or 'user'}/{body['name']}"


@contextmanager
def fake_hub(monkeypatch):
    hub = FakeHub()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    huggingface_hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(hub.handle)))
    try:
        yield hub
    finally:
        huggingface_hub.set_client_factory(lambda: httpx2.Client())
        huggingface_hub.close_session()
