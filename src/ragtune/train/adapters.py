"""Adapters on disk: `<home>/adapters/<bot>/<id>/` holding a PEFT adapter, its GGUF conversion for llama.cpp and a
manifest with the lineage (format version, ragtune version, base model and sha256, training config, data file
hashes, the id and content hash of every document learned from, held-out metrics).

An adapter is written in a work folder and renamed into place only once complete, and the manifest (written
last) must say `complete`, so a half-written adapter is never listed nor loaded. Staleness is computed from the
lineage against the store's documents on every read: an adapter is stale as soon as a document it learned from
changed or is gone, erasure included, with nothing to keep in sync."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .. import __version__
from ..errors import ModelError, NotFoundError
from ..store import Bot, Store

FORMAT = "ragtune-adapter"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ERASED = "erased.json"  # written by erasure: ids of learned documents that were erased (no text)
PEFT_DIR = "peft"
GGUF_FILE = "adapter.gguf"
DATA_FILE = "data.jsonl"
WORK_DIR = ".work"
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Adapter:
    id: str
    path: Path
    manifest: dict[str, Any]

    @property
    def gguf(self) -> Path | None:
        name = self.manifest.get("files", {}).get("gguf")
        return self.path / name if name and (self.path / name).is_file() else None

    @property
    def peft(self) -> Path:
        return self.path / self.manifest.get("files", {}).get("peft", PEFT_DIR)

    @property
    def raft(self) -> bool:
        return bool(self.manifest.get("training", {}).get("raft"))


def adapters_root(home: str | Path, bot: str) -> Path:
    return Path(home) / "adapters" / _SAFE.sub("_", bot)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file in the same folder, fsync it, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, ensure_ascii=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a complete adapter; ModelError if it is missing, unreadable, incomplete or from a newer
    format."""
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"adapter {folder} has no readable manifest ({exc}); it is incomplete or damaged") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelError(f"{path} is not a ragtune adapter manifest")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(f"adapter {folder} has format version {data.get('format_version')}, newer than this "
                         f"ragtune reads ({FORMAT_VERSION}); upgrade ragtune")
    if not data.get("complete"):
        raise ModelError(f"adapter {folder} is incomplete")
    return data


def list_adapters(home: str | Path, bot: str) -> list[Adapter]:
    """Complete adapters of a bot, oldest first. Work folders, half-written and damaged adapters are skipped."""
    root = adapters_root(home, bot)
    if not root.is_dir():
        return []
    out = []
    for folder in root.iterdir():
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        try:
            manifest = load_manifest(folder)
        except ModelError:
            continue
        out.append(Adapter(folder.name, folder, manifest))
    return sorted(out, key=lambda a: (a.manifest.get("created_at", 0), a.id))


def get_adapter(home: str | Path, bot: str, adapter_id: str | None = None, prefer_raft: bool = False) -> Adapter:
    """The adapter `adapter_id`, else the newest one (the newest RAFT-trained one when `prefer_raft`)."""
    adapters = list_adapters(home, bot)
    if adapter_id:
        for a in adapters:
            if a.id == adapter_id:
                return a
        raise NotFoundError(f"no adapter {adapter_id!r} for bot {bot!r}; `ragtune adapters` lists them")
    if not adapters:
        raise NotFoundError(f"bot {bot!r} has no fine-tuned adapter yet; run `ragtune finetune --bot {bot}` first")
    if prefer_raft and any(a.raft for a in adapters):
        return [a for a in adapters if a.raft][-1]
    return adapters[-1]


# --------------------------------------------------------------------------- lineage and staleness
def current_documents(store: Store, bot: Bot) -> dict[int, tuple[str, str]]:
    """The store's documents of the bot: id -> (path, content hash)."""
    return {s.id: (s.path, s.content_hash)
            for source in store.list_sources(bot) for s in store.document_states(bot, source).values()}


def adapter_status(adapter: Adapter, current: dict[int, tuple[str, str]]) -> dict[str, Any]:
    """Whether the adapter still matches the knowledge base: `changed` (learned documents whose content hash
    differs now), `removed` (learned documents no longer in the store) and `erased` (removed by `ragtune
    forget`). Any of them makes the adapter stale: the model still holds the old facts."""
    by_path = {path: (doc_id, h) for doc_id, (path, h) in current.items()}
    changed, removed = [], []
    for doc in adapter.manifest.get("documents", []):
        now = current.get(doc["id"])
        if now is None or now[0] != doc["path"]:
            moved = by_path.get(doc["path"])  # deleted and added again under a new id
            if moved is None:
                removed.append(doc["path"])
            elif moved[1] != doc["content_hash"]:
                changed.append(doc["path"])
        elif now[1] != doc["content_hash"]:
            changed.append(doc["path"])
    erased = _read_erased(adapter.path)
    stale = bool(changed or removed or erased)
    reasons = ([f"{len(changed)} learned documents changed"] if changed else []) + \
              ([f"{len(removed)} learned documents removed"] if removed else []) + \
              ([f"{len(erased)} learned documents erased"] if erased else [])
    return {"id": adapter.id, "stale": stale, "reason": "; ".join(reasons), "changed": changed,
            "removed": removed, "erased": len(erased)}


def _read_erased(folder: Path) -> list[int]:
    try:
        return list(json.loads((folder / ERASED).read_text(encoding="utf-8")).get("document_ids", []))
    except (OSError, ValueError, AttributeError):
        return []


def mark_adapters_stale(store: Store, bot: Bot, document_ids: Sequence[int], home: str | Path | None = None) -> int:
    """For erasure: record that `document_ids` were erased in every adapter of the bot that learned from one of
    them, delete those adapters' cached training data (it quotes the erased text), and return how many adapters
    were marked. Staleness itself needs no marking (it is computed from lineage); the record keeps the adapter
    stale even if a document with the same path and text is added again later."""
    return len(record_erasure(store, bot, document_ids, home))


def record_erasure(store: Store, bot: Bot, document_ids: Sequence[int], home: str | Path | None = None) -> list[str]:
    """What `mark_adapters_stale` does, returning the ids of the adapters it marked (oldest first). `home`
    defaults to the folder of the store's database file; a store without one has no adapters beside it."""
    if home is None:
        db = getattr(store, "path", None)
        if db is None:
            return []
        home = Path(db).parent
    ids = {int(d) for d in document_ids}
    marked = []
    for adapter in list_adapters(home, bot.name):
        learned = {int(d["id"]) for d in adapter.manifest.get("documents", [])}
        hit = sorted(learned & ids)
        if not hit:
            continue
        erased = sorted(set(_read_erased(adapter.path)) | set(hit))
        write_json_atomic(adapter.path / ERASED, {"document_ids": erased, "at": time.time()})
        data = adapter.path / DATA_FILE
        if data.exists():
            data.unlink()
        marked.append(adapter.id)
    return marked


# --------------------------------------------------------------------------- writing
def new_adapter_id(key: str) -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + key[:6]


def commit_adapter(staged: Path, home: str | Path, bot: str, adapter_id: str, manifest: dict[str, Any]) -> Adapter:
    """Write the manifest (complete) into the fully written `staged` folder, then rename it into place: one
    atomic step, so readers see either no adapter or a whole one."""
    manifest = {**manifest, "format": FORMAT, "format_version": FORMAT_VERSION, "ragtune_version": __version__,
                "id": adapter_id, "bot": bot, "complete": True}
    write_json_atomic(staged / MANIFEST, manifest)
    target = adapters_root(home, bot) / adapter_id
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, target)
    return Adapter(adapter_id, target, manifest)


def remove_adapter(adapter: Adapter) -> None:
    """Delete an adapter: rename it to a hidden folder first (never listed), then remove the files."""
    trash = adapter.path.parent / f".deleting-{adapter.id}"
    os.replace(adapter.path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def describe(adapter: Adapter, status: dict[str, Any]) -> dict[str, Any]:
    """One adapter as `ragtune adapters --json` prints it."""
    m = adapter.manifest
    return {
        "id": adapter.id,
        "bot": m.get("bot"),
        "created_at": m.get("created_at"),
        "base_model": m.get("base_model", {}).get("name"),
        "raft": adapter.raft,
        "runtime": "llama.cpp" if adapter.gguf else "transformers",
        "documents": len(m.get("documents", [])),
        "examples": m.get("data", {}).get("train"),
        "steps": m.get("training", {}).get("steps_run"),
        "stopped": m.get("training", {}).get("stopped"),
        "train_seconds": m.get("training", {}).get("seconds"),
        "held_out_loss": m.get("metrics", {}).get("held_out_loss"),
        "size_bytes": m.get("files", {}).get("size_bytes"),
        "stale": status["stale"],
        "stale_reason": status["reason"],
        "changed": status["changed"],
        "removed": status["removed"],
        "path": str(adapter.path),
    }


def describe_all(store: Store, bot: Bot, home: str | Path) -> list[dict[str, Any]]:
    """Every complete adapter of the bot, oldest first, as `describe` gives it (stale flag and reason included);
    the store's documents are read once, and not at all when there are no adapters."""
    adapters = list_adapters(home, bot.name)
    current = current_documents(store, bot) if adapters else {}
    return [describe(a, adapter_status(a, current)) for a in adapters]


# --------------------------------------------------------------------------- GGUF conversion for llama.cpp
_GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down"}
_PEFT_KEY = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(\w+\.\w+)\.lora_([AB])\.weight$")


def _permute(weights, n_head: int, n_head_kv: int):
    """llama.cpp stores Q and K rows in its RoPE order (convert_hf_to_gguf's LlamaModel.permute); the LoRA B
    matrix, whose rows are the output rows, must be reordered the same way."""
    if n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def peft_to_gguf(peft_dir: Path, out_file: Path, n_head: int, n_head_kv: int, arch: str = "llama") -> Path:
    """Convert a PEFT LoRA adapter of a llama-architecture model to a GGUF LoRA adapter for llama.cpp
    (`Llama(lora_path=...)`), as llama.cpp's convert_lora_to_gguf.py does (f32 tensors, Q/K rows permuted,
    general.type = adapter, adapter.lora.alpha). Written to a temporary file and renamed."""
    from ..errors import require

    gguf = require("gguf", "train")
    safetensors = require("safetensors.numpy", "train")
    if arch != "llama":
        raise ModelError(f"GGUF LoRA conversion supports the llama architecture, not {arch!r}")
    config = json.loads((peft_dir / "adapter_config.json").read_text(encoding="utf-8"))
    tensors = safetensors.load_file(str(peft_dir / "adapter_model.safetensors"))
    pairs: dict[tuple[int, str], dict[str, Any]] = {}
    for key, value in tensors.items():
        m = _PEFT_KEY.match(key)
        if not m or m.group(2) not in _GGUF_NAMES:
            raise ModelError(f"cannot convert adapter tensor {key!r} to GGUF (only attention and MLP projections)")
        pairs.setdefault((int(m.group(1)), m.group(2)), {})[m.group(3)] = value
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config["lora_alpha"]))
    for (layer, module), ab in sorted(pairs.items()):
        a, b = ab["A"].astype("float32"), ab["B"].astype("float32")
        if module == "self_attn.q_proj":
            b = _permute(b, n_head, n_head)
        elif module == "self_attn.k_proj":
            b = _permute(b, n_head, n_head_kv)
        name = f"blk.{layer}.{_GGUF_NAMES[module]}.weight"
        writer.add_tensor(name + ".lora_a", a.copy(order="C"))
        writer.add_tensor(name + ".lora_b", b.copy(order="C"))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(tmp, out_file)
    return out_file
