"""Shared fixtures: a fresh RAGTUNE_HOME per test, settings with the fast hash embedder, and a CLI runner."""

from __future__ import annotations

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
