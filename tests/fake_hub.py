"""A tiny Hugging Face Hub look-alike on 127.0.0.1, for tests that push to / pull from "the Hub".

`FakeHub` is a stdlib `ThreadingHTTPServer` (port 0, daemon thread) that implements the part of the Hub HTTP API used
by huggingface_hub 2.4 (`create_repo`, `upload_folder`/`create_commit` in "regular" mode, i.e. without LFS/xet,
`list_repo_files`, `model_info`, `hf_hub_download`, `snapshot_download`) and by transformers 5.x (`from_pretrained`,
`pipeline`, `Trainer.push_to_hub`). Repos live on disk: one folder per commit, holding the full file tree of that
commit (`<root>/<type>s/<ns>/<name>/<sha>/...`); a commit starts from a copy of its parent.

The `fake_hub` pytest fixture starts a server and points the already-imported huggingface_hub and transformers at it
(tests/conftest.py keeps HF_HUB_OFFLINE=1 for the session, so the fixture flips that off and restores it afterwards).
See `fake_hub` below for what it patches.

Failure switches (attributes of `FakeHub`, settable at any time):
  * `fail_writes = True`  -> create / preupload / commit answer `fail_status` (500 by default).
  * `reject_auth = True`  -> every request answers 401.
  * `stop()`              -> the server goes away (connection refused), like a Hub outage.
Writes always need `Authorization: Bearer <token>` with the server's token, otherwise 401.
Every request is recorded in `requests` (and the ones that matched no route also in `unknown_requests`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import threading
import time
import types
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

USER = "tester"
DEFAULT_TOKEN = "hf_fake_token"
REPO_TYPES = ("model", "dataset", "space")
# What the real Hub puts in a new repo (abridged): a first commit with a .gitattributes.
INITIAL_GITATTRIBUTES = (
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
)
# Words that follow `<repo_id>` in `/api/<type>s/<repo_id>/<action>/...`.
ACTIONS = ("revision", "tree", "preupload", "commit", "commits")


def git_blob_oid(data: bytes) -> str:
    """The git blob sha1 (what the Hub reports as `oid`, and what huggingface_hub compares in preupload)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    """Raised inside a handler to answer an error; `code` goes to the X-Error-Code header."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


@dataclass
class RecordedRequest:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: Message  # case-insensitive: headers.get("Authorization"), dict(headers.items())
    body: bytes = b""
    status: int = 0  # filled in once answered

    def json(self):
        return json.loads(self.body)


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: list[dict] = field(default_factory=list)  # oldest first: {"sha", "summary", "description", "date"}

    @property
    def head(self) -> str:
        return self.commits[-1]["sha"]


class FakeHub:
    """The server plus its state. Start with `FakeHub(root).start()`; `endpoint` is then `http://127.0.0.1:<port>`."""

    def __init__(self, root: str | os.PathLike, token: str = DEFAULT_TOKEN, user: str = USER):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.user = user
        self.requests: list[RecordedRequest] = []
        self.unknown_requests: list[RecordedRequest] = []
        self.outside_hosts: list[str] = []  # filled by the fixture's network guard
        self.fail_writes = False
        self.fail_status = 500
        self.reject_auth = False
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self.endpoint = ""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Simulate "server down": stop listening and cut open keep-alive connections (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            conns, self._connections = list(self._connections), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def running(self) -> bool:
        return self._server is not None

    # ------------------------------------------------------------------ test helpers

    def full_repo_id(self, repo_id: str) -> str:
        """Repo ids without a namespace belong to the user, as on the Hub."""
        return repo_id if "/" in repo_id else f"{self.user}/{repo_id}"

    def repo_exists(self, repo_id: str, repo_type: str = "model") -> bool:
        return (repo_type, self.full_repo_id(repo_id)) in self._repos

    def create_repo(self, repo_id: str, repo_type: str = "model", private: bool = False) -> str:
        """Create a repo directly (no HTTP). Raises FileExistsError if it exists. Returns the full repo id."""
        repo_id = self.full_repo_id(repo_id)
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                raise FileExistsError(repo_id)
            repo = _Repo(repo_type, repo_id, private)
            self._repos[(repo_type, repo_id)] = repo
            self._commit(repo, {".gitattributes": INITIAL_GITATTRIBUTES}, [], [], "initial commit", "")
        return repo_id

    def publish(self, repo_id: str, source, message: str = "Upload", repo_type: str = "model") -> str:
        """Commit a local folder (or a {path: bytes} dict) to a repo, creating it if needed. Returns the commit sha.

        Handy to seed e.g. a teacher repo without going through HTTP.
        """
        if isinstance(source, dict):
            files = {p: (b if isinstance(b, bytes) else str(b).encode()) for p, b in source.items()}
        else:
            base = Path(source)
            files = {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}
        if not self.repo_exists(repo_id, repo_type):
            self.create_repo(repo_id, repo_type)
        with self._lock:
            repo = self._repos[(repo_type, self.full_repo_id(repo_id))]
            return self._commit(repo, files, [], [], message, "")

    def repo_files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """{path: content} of a repo at a revision (KeyError if the repo does not exist)."""
        repo = self._repos[(repo_type, self.full_repo_id(repo_id))]
        folder = self._commit_dir(repo, self._resolve(repo, revision))
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    def commit_log(self, repo_id: str, repo_type: str = "model") -> list[dict]:
        """Commits of a repo, oldest first: [{"sha", "summary", "description", "date"}]."""
        return [dict(c) for c in self._repos[(repo_type, self.full_repo_id(repo_id))].commits]

    def requests_to(self, method: str, path_part: str = "") -> list[RecordedRequest]:
        """Recorded requests with this method whose path contains `path_part`."""
        return [r for r in self.requests if r.method == method and path_part in r.path]

    # ------------------------------------------------------------------ storage

    def _commit_dir(self, repo: _Repo, sha: str) -> Path:
        return self.root / f"{repo.repo_type}s" / repo.repo_id / sha

    def _resolve(self, repo: _Repo, revision: str) -> str:
        if revision in ("main", "refs/heads/main"):
            return repo.head
        for c in repo.commits:
            if c["sha"] == revision:
                return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _commit(self, repo, files: dict[str, bytes], deleted_files, deleted_folders, summary, description) -> str:
        """Make a commit on main: the parent's tree, minus deletions, plus `files`. Caller holds the lock."""
        parent = repo.commits[-1]["sha"] if repo.commits else ""
        digest = hashlib.sha1(f"{parent}\n{summary}\n{time.time_ns()}\n{len(repo.commits)}".encode())
        for path in sorted(files):
            digest.update(f"{path}\0{git_blob_oid(files[path])}\n".encode())
        sha = digest.hexdigest()
        folder = self._commit_dir(repo, sha)
        tmp = folder.with_name(sha + ".tmp")
        if parent:
            shutil.copytree(self._commit_dir(repo, parent), tmp)
        else:
            tmp.mkdir(parents=True)
        for path in deleted_files:
            (tmp / path).unlink(missing_ok=True)
        for path in deleted_folders:
            shutil.rmtree(tmp / path.rstrip("/"), ignore_errors=True)
        for path, data in files.items():
            target = tmp / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        tmp.rename(folder)
        date = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        repo.commits.append({"sha": sha, "summary": summary, "description": description, "date": date})
        return sha


def _safe_path(path: str) -> str:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise HubError(400, f"Invalid path: {path!r}")
    return "/".join(parts)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub  # set on a per-server subclass

    def log_message(self, *args):  # keep test output clean
        pass

    def setup(self):
        super().setup()
        with self.hub._lock:
            self.hub._connections.add(self.connection)

    def finish(self):
        with self.hub._lock:
            self.hub._connections.discard(self.connection)
        super().finish()

    # ------------------------------------------------------------------ plumbing

    def do_GET(self):
        self._handle()

    def do_HEAD(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def _handle(self):
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        rec = RecordedRequest(self.command, split.path, parse_qs(split.query), self.headers, body)
        with self.hub._lock:
            self.hub.requests.append(rec)
        self.rec = rec
        try:
            if self.hub.reject_auth:
                raise HubError(401, "Invalid credentials in Authorization header")
            self._route(rec)
        except HubError as e:
            headers = {"X-Error-Message": e.message.encode("ascii", "replace").decode().replace("\n", " ")}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._send_json({"error": e.message, **e.extra}, e.status, headers)
        except Exception as e:  # a bug in the fake: make it visible instead of hanging the client
            self._send_json({"error": f"fake hub crashed: {e!r}"}, 500)
            raise

    def _send(self, status: int, data: bytes, content_type: str, headers: dict | None = None):
        self.rec.status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_json(self, obj, status: int = 200, headers: dict | None = None):
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {self.hub.token}"

    def _require_write(self):
        if not self._authorized():
            raise HubError(401, "Invalid credentials in Authorization header")
        if self.hub.fail_writes:
            raise HubError(self.hub.fail_status, "fake hub: write failure switched on")

    def _repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self.hub._repos.get((repo_type, self.hub.full_repo_id(repo_id)))
        if repo is None or (repo.private and not self._authorized()):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    # ------------------------------------------------------------------ routing

    def _route(self, rec: RecordedRequest):
        segs = [unquote(s) for s in rec.path.strip("/").split("/")] if rec.path.strip("/") else []
        m = rec.method
        if segs == ["api", "whoami-v2"] and m == "GET":
            return self._whoami()
        if segs == ["api", "validate-yaml"] and m == "POST":
            return self._validate_yaml(rec)
        if segs == ["api", "repos", "create"] and m == "POST":
            return self._create(rec)
        if len(segs) >= 3 and segs[0] == "api" and segs[1] in ("models", "datasets", "spaces"):
            repo_type, rest = segs[1][:-1], segs[2:]
            if len(rest) >= 3 and rest[2] in ACTIONS:
                repo_id, action, args = "/".join(rest[:2]), rest[2], rest[3:]
            elif len(rest) >= 2 and rest[1] in ACTIONS:
                repo_id, action, args = rest[0], rest[1], rest[2:]
            elif len(rest) <= 2:
                repo_id, action, args = "/".join(rest), "info", []
            else:
                return self._unknown(rec)
            if action == "info" and m == "GET":
                return self._info(repo_type, repo_id, "main")
            if action == "revision" and m == "GET" and args:
                return self._info(repo_type, repo_id, "/".join(args))
            if action == "tree" and m == "GET" and args:
                return self._tree(rec, repo_type, repo_id, args[0], "/".join(args[1:]))
            if action == "preupload" and m == "POST" and args:
                return self._preupload(rec, repo_type, repo_id, "/".join(args))
            if action == "commit" and m == "POST" and args:
                return self._commit(rec, repo_type, repo_id, "/".join(args))
            if action == "commits" and m == "GET" and args:
                return self._commits(repo_type, repo_id, "/".join(args))
            return self._unknown(rec)
        if m in ("GET", "HEAD") and "resolve" in segs[:4]:
            repo_type = "model"
            if segs[0] in ("datasets", "spaces"):
                repo_type, segs = segs[0][:-1], segs[1:]
            i = segs.index("resolve") if "resolve" in segs[:3] else -1
            if i in (1, 2) and len(segs) >= i + 3:
                return self._resolve_file(repo_type, "/".join(segs[:i]), segs[i + 1], "/".join(segs[i + 2 :]))
        return self._unknown(rec)

    def _unknown(self, rec: RecordedRequest):
        with self.hub._lock:
            self.hub.unknown_requests.append(rec)
        raise HubError(404, f"fake hub: no route for {rec.method} {rec.path}")

    # ------------------------------------------------------------------ endpoints

    def _whoami(self):
        if not self._authorized():
            raise HubError(401, "Invalid credentials in Authorization header")
        self._send_json(
            {
                "type": "user",
                "id": "0" * 24,
                "name": self.hub.user,
                "fullname": self.hub.user,
                "email": f"{self.hub.user}@example.invalid",
                "emailVerified": True,
                "isPro": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "fake", "role": "write"}},
            }
        )

    def _validate_yaml(self, rec: RecordedRequest):
        content = rec.json().get("content", "")
        errors = []
        if content.startswith("---"):
            lines = content.splitlines()
            try:
                end = next(i for i, line in enumerate(lines[1:], 1) if line.strip() == "---")
            except StopIteration:
                errors.append({"message": "YAML front matter is not closed by '---'"})
            else:
                errors += _yaml_errors("\n".join(lines[1:end]))
        if errors:
            self._send_json({"errors": errors, "warnings": []}, 400)
        else:
            self._send_json({"errors": [], "warnings": []})

    def _create(self, rec: RecordedRequest):
        self._require_write()
        payload = rec.json()
        name, org = payload.get("name"), payload.get("organization")
        repo_type = payload.get("type") or "model"
        if not name or repo_type not in REPO_TYPES:
            raise HubError(400, "Invalid repo name or type")
        if org not in (None, self.hub.user):
            raise HubError(403, f"You don't have the rights to create a repo under the namespace {org!r}")
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        try:
            repo_id = self.hub.create_repo(name, repo_type, private)
        except FileExistsError:  # the Hub's 409 carries the url too: create_repo(exist_ok=True) reads it
            url = f"{self.hub.endpoint}/{prefix}{self.hub.full_repo_id(name)}"
            raise HubError(409, f"You already created this {repo_type} repo", url=url) from None
        self._send_json({"url": f"{self.hub.endpoint}/{prefix}{repo_id}", "name": repo_id, "id": "0" * 24})

    def _info(self, repo_type: str, repo_id: str, revision: str):
        repo = self._repo(repo_type, repo_id)
        sha = self.hub._resolve(repo, revision)
        files = self.hub.repo_files(repo.repo_id, sha, repo_type)
        commit = next(c for c in repo.commits if c["sha"] == sha)
        info = {
            "_id": "0" * 24,
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": sha,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "lastModified": commit["date"],
            "createdAt": repo.commits[0]["date"],
            "tags": [],
            "downloads": 0,
            "likes": 0,
            "siblings": [
                {"rfilename": p, "size": len(b), "blobId": git_blob_oid(b)} for p, b in files.items()
            ],
        }
        if repo_type == "model":
            info["modelId"] = repo.repo_id
        self._send_json(info)

    def _tree(self, rec: RecordedRequest, repo_type: str, repo_id: str, revision: str, path: str):
        repo = self._repo(repo_type, repo_id)
        sha = self.hub._resolve(repo, revision)
        recursive = rec.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        files = self.hub.repo_files(repo.repo_id, sha, repo_type)
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in files):
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
        entries, folders = [], set()
        for p, data in files.items():
            if not p.startswith(prefix):
                continue
            parts = p[len(prefix) :].split("/")
            # every parent folder below `prefix` (only the first one unless recursive)
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                entries.append({"type": "file", "path": p, "size": len(data), "oid": git_blob_oid(data)})
        entries += [{"type": "directory", "path": f, "size": 0, "oid": git_blob_oid(f.encode())} for f in folders]
        self._send_json(sorted(entries, key=lambda e: e["path"]))

    def _preupload(self, rec: RecordedRequest, repo_type: str, repo_id: str, revision: str):
        self._require_write()
        repo = self._repo(repo_type, repo_id)
        files = self.hub.repo_files(repo.repo_id, self.hub._resolve(repo, revision), repo_type)
        answer = []
        for f in rec.json().get("files", []):
            existing = files.get(f["path"])
            oid = git_blob_oid(existing) if existing is not None else None
            answer.append({"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
        self._send_json({"files": answer, "commitOid": repo.head})

    def _commit(self, rec: RecordedRequest, repo_type: str, repo_id: str, revision: str):
        self._require_write()
        repo = self._repo(repo_type, repo_id)
        if revision not in ("main", "refs/heads/main"):
            raise HubError(404, f"fake hub only has branch 'main', not {revision!r}", "RevisionNotFound")
        header, files, deleted_files, deleted_folders = {}, {}, [], []
        for line in rec.body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                files[_safe_path(value["path"])] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                deleted_files.append(_safe_path(value["path"]))
            elif key == "deletedFolder":
                deleted_folders.append(_safe_path(value["path"]))
            else:  # lfsFile, xet, copies...: never offered by our preupload answer
                raise HubError(400, f"fake hub: unsupported commit operation {key!r}")
        with self.hub._lock:
            parent = header.get("parentCommit")
            if parent and parent != repo.head:
                raise HubError(412, f"A commit has happened since. Parent {parent} is not the head {repo.head}")
            sha = self.hub._commit(
                repo, files, deleted_files, deleted_folders, header.get("summary", ""), header.get("description", "")
            )
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        self._send_json(
            {
                "success": True,
                "commitUrl": f"{self.hub.endpoint}/{prefix}{repo.repo_id}/commit/{sha}",
                "commitOid": sha,
                "pullRequestUrl": None,
            }
        )

    def _commits(self, repo_type: str, repo_id: str, revision: str):
        repo = self._repo(repo_type, repo_id)
        sha = self.hub._resolve(repo, revision)
        upto = repo.commits[: [c["sha"] for c in repo.commits].index(sha) + 1]
        author = [{"user": self.hub.user}]
        self._send_json(
            [
                {"id": c["sha"], "title": c["summary"], "message": c["description"], "date": c["date"]}
                | {"authors": author}
                for c in reversed(upto)
            ]
        )

    def _resolve_file(self, repo_type: str, repo_id: str, revision: str, path: str):
        repo = self._repo(repo_type, repo_id)
        sha = self.hub._resolve(repo, revision)
        file = self.hub._commit_dir(repo, sha) / _safe_path(path)
        if not file.is_file():
            raise HubError(404, "Entry not found", "EntryNotFound")
        data = file.read_bytes()
        self._send(
            200,
            data,
            "application/octet-stream",
            {"X-Repo-Commit": sha, "ETag": f'"{git_blob_oid(data)}"', "Accept-Ranges": "bytes"},
        )


def _yaml_errors(text: str) -> list[dict]:
    """Errors in a README's YAML front matter, in the Hub's {"message": ...} shape (empty list when it is fine)."""
    try:
        import yaml
    except ImportError:  # minimal check: every non-blank, non-comment top-level line needs a "key:"
        bad = [l for l in text.splitlines() if l.strip() and not l.startswith((" ", "-", "#")) and ":" not in l]
        return [{"message": f"Invalid YAML line: {l!r}"} for l in bad]
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return [{"message": f"Invalid YAML: {e}"}]
    if data is not None and not isinstance(data, dict):
        return [{"message": "YAML metadata must be a mapping"}]
    return []


# ---------------------------------------------------------------------- pytest fixture


def _guard_outside_network(monkeypatch, hub: FakeHub):
    """Make name resolution fail for anything but loopback (recording the host), so that a call that escapes the
    fake hub (e.g. to huggingface.co) fails at once and visibly instead of hanging or silently reaching out."""
    real_getaddrinfo = socket.getaddrinfo
    allowed = {"127.0.0.1", "localhost", "::1", "0.0.0.0", socket.gethostname()}

    def guarded_getaddrinfo(host, *args, **kwargs):
        h = host.decode() if isinstance(host, bytes) else host
        if h is not None and h not in allowed:
            hub.outside_hosts.append(h)
            raise socket.gaierror(socket.EAI_NONAME, f"fake_hub fixture: network access to {h!r} is blocked")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)


def patch_hf_clients(monkeypatch, endpoint: str, token: str, cache_dir: str | os.PathLike) -> None:
    """Point the already-imported huggingface_hub (and transformers, if imported) at `endpoint`, online, with
    `token`, and with a fresh download cache. Everything goes through `monkeypatch`, so it is undone at teardown."""
    from urllib.parse import urlsplit as _split

    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub import hf_api as hf_api_module
    from huggingface_hub.utils import _http

    # Environment: read at import time only, but set for subprocesses started by the test (and for code that
    # re-reads it). HF_ENDPOINT + HF_TOKEN + HF_HUB_OFFLINE=0 is everything a fresh interpreter needs.
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache_dir))

    # Offline switch: `constants.is_offline_mode()` returns `constants.HF_HUB_OFFLINE`, and every user (the httpx event
    # hook that raises OfflineModeIsEnabled, transformers' `is_offline_mode` imports) reads it at call time.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    # Endpoint, read at call time from these module attributes (captured from HF_ENDPOINT at import).
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    host = _split(endpoint).hostname
    monkeypatch.setattr(constants, "HF_URL_HOSTS", frozenset(constants.HF_URL_HOSTS | {host}))
    monkeypatch.setattr(_http, "_HUB_ORIGINS", frozenset(_http._HUB_ORIGINS | {_http._url_origin(endpoint)}))
    # Download cache: a fresh one per test, so nothing leaks between fake hubs (read at call time).
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))
    # HfApi instances made at import time captured the old endpoint: the module-level one behind
    # `huggingface_hub.create_repo/upload_folder/model_info/...` and its whoami cache.
    monkeypatch.setattr(hf_api_module.api, "endpoint", endpoint)
    monkeypatch.setattr(hf_api_module.api, "_whoami_cache", {})
    # Retries (http_backoff: 5 retries on 5xx / connection errors, sleeping 1+2+4+8+8 s) without the sleeping.
    fast_time = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("__")})
    fast_time.sleep = lambda seconds: None
    monkeypatch.setattr(_http, "time", fast_time)
    assert huggingface_hub.is_offline_mode() is False

    import sys

    if "transformers" in sys.modules:
        import transformers.utils.hub as tf_hub

        # transformers caches one HfApi (`hf_api()`), made with the endpoint of its first use.
        monkeypatch.setattr(tf_hub, "_hf_api", None)


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """A running `FakeHub` that huggingface_hub and transformers talk to for the duration of the test.

    Attributes: `endpoint`, `token`, `user` ("tester"), `requests`, `unknown_requests`, `outside_hosts`,
    `fail_writes`/`fail_status`, `reject_auth`; methods: `repo_files()`, `commit_log()`, `publish()`,
    `create_repo()`, `requests_to()`, `stop()`. Name resolution of non-loopback hosts is blocked while it is active.
    """
    hub = FakeHub(tmp_path / "fake_hub_repos").start()
    try:
        patch_hf_clients(monkeypatch, hub.endpoint, hub.token, tmp_path / "fake_hub_cache")
        _guard_outside_network(monkeypatch, hub)
        yield hub
    finally:
        hub.stop()
    # monkeypatch (torn down after this fixture) restores the offline flag, the endpoint, the env and the caches.
