"""LoRA training with peft on the base model read in fp32 from its GGUF file (transformers + gguf), and the whole
`finetune` run: dataset → training (progress bar with loss, early stopping on held-out loss, fixed seed,
resumable checkpoints, a wall-clock budget) → PEFT adapter + GGUF conversion → manifest → atomic commit.

A run killed midway leaves a checkpoint in `<home>/adapters/<bot>/.work/<key>/`; the same command with the same
data and config resumes from it. Nothing is listed as an adapter until the final rename."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ConfigError, InputError, ModelError, require
from ..models.generators import QWEN_NAME, QWEN_SHA256, SMOLLM2_NAME, SMOLLM2_SHA256, qwen_path, sha256_file, \
    smollm2_path, verify_sha256, VERIFIED_CACHE
from ..settings import Settings
from . import TRAIN_EXTRA
from .adapters import DATA_FILE, GGUF_FILE, PEFT_DIR, WORK_DIR, Adapter, adapters_root, commit_adapter, \
    folder_size, new_adapter_id, peft_to_gguf
from .dataset import FINETUNE_SYSTEM, Dataset, Example

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEVICES = ("cpu", "cuda", "auto")
IGNORE = -100


def _f(default: Any, help: str, choices: tuple | None = None):
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class TrainConfig:
    """Training settings. The defaults finish within ~15 minutes on a 2-core CPU for ~20 short documents."""

    steps: int = _f(400, "optimizer steps (the learning-rate schedule spans them; at most ~12 minutes on a 2-core "
                    "CPU for the sample help centre, so two runs of one command train the same adapter)")
    max_minutes: float = _f(14.0, "wall-clock safety limit of the training loop (resumed runs count their earlier "
                            "time); training stops with the best weights so far when it is spent")
    batch_size: int = _f(8, "examples per step")
    micro_batch_tokens: int = _f(2048, "most padded tokens in one forward/backward pass: a step accumulates the "
                                 "gradients of as many passes as its batch needs (the same update, less memory "
                                 "for long RAFT examples)")
    learning_rate: float = _f(2e-3, "AdamW learning rate (after warm-up)")
    warmup_steps: int = _f(10, "linear learning-rate warm-up")
    schedule: str = _f("cosine", "learning rate after warm-up: cosine (decays to a tenth over `steps`) or constant",
                       ("cosine", "constant"))
    rank: int = _f(16, "LoRA rank")
    alpha: int = _f(32, "LoRA alpha (scale = alpha / rank)")
    dropout: float = _f(0.0, "LoRA dropout")
    target_modules: tuple[str, ...] = _f(TARGET_MODULES, "projections that get a LoRA")
    seed: int = _f(0, "seed for the data order, the split and the LoRA initialisation")
    eval_every: int = _f(30, "steps between held-out evaluations")
    patience: int = _f(3, "held-out evaluations without improvement before stopping early")
    min_delta: float = _f(0.01, "a held-out loss must improve by this much to count as better")
    checkpoint_every: int = _f(10, "steps between resumable checkpoints")
    device: str = _f("cpu", "cpu, cuda or auto (cuda when available)", DEVICES)
    max_length: int = _f(1024, "longest example in tokens (longer ones are skipped)")
    eval_generate: int = _f(6, "held-out questions answered by greedy generation at the end (fact accuracy)")

    def __post_init__(self) -> None:
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(f"unknown {f.name} {getattr(self, f.name)!r}; valid values: {', '.join(choices)}")
        if self.steps < 1:
            raise ConfigError("steps must be at least 1")
        if self.batch_size < 1 or self.rank < 1:
            raise ConfigError("batch_size and rank must be at least 1")
        if self.micro_batch_tokens < 1:
            raise ConfigError("micro_batch_tokens must be at least 1")
        if not 0 < self.learning_rate < 1:
            raise ConfigError("learning_rate must be between 0 and 1")
        if self.max_minutes <= 0:
            raise ConfigError("max_minutes must be positive")
        unknown = set(self.target_modules) - set(TARGET_MODULES)
        if unknown:
            raise ConfigError(f"unknown target modules {sorted(unknown)}; valid values: {', '.join(TARGET_MODULES)}")

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["target_modules"] = list(self.target_modules)
        return out


@dataclass
class TrainResult:
    steps_run: int
    stopped: str  # steps | early-stop | budget
    seconds: float
    resumed_from: int
    initial_held_out_loss: float | None
    held_out_loss: float | None
    train_loss: float | None
    held_out_fact_accuracy: float | None
    peak_memory_mb: float
    device: str
    history: list[dict[str, float]]
    threads: int = 0


# --------------------------------------------------------------------------- base model
@dataclass(frozen=True)
class BaseModel:
    name: str
    path: Path
    sha256: str


def base_model_for(settings: Settings) -> BaseModel:
    """The GGUF the adapter is trained on: the configured local generator (the default SmolLM2 for echo/openai,
    which cannot be fine-tuned here)."""
    models = settings.home_path / "models"
    if settings.generator == "qwen-0.5b":
        return BaseModel(QWEN_NAME, qwen_path(models), QWEN_SHA256)
    if settings.generator == "gguf":
        path = Path(os.path.expanduser(settings.generator_path))
        if not path.is_file():
            raise ModelError(f"generator_path {path} does not exist or is not a file")
        return BaseModel(f"gguf:{path.stem}", path, sha256_file(path))
    return BaseModel(SMOLLM2_NAME, smollm2_path(), SMOLLM2_SHA256)


def require_training() -> None:
    """Raise MissingExtraError naming the `train` extra when any training dependency is absent."""
    for module in ("torch", "transformers", "peft", "gguf", "safetensors"):
        require(module, TRAIN_EXTRA)


_BASE_CACHE: dict[tuple[str, str], Any] = {}  # (path, device) -> (tokenizer, model) handed back after training


def load_base(base: BaseModel, device: str, cache: Path | None = None):
    """(tokenizer, fp32 model) from the GGUF, sha256-checked. The caller owns the model (peft changes it in
    place); `release_base` hands an unchanged one back so the next training in this process skips the load."""
    torch = require("torch", TRAIN_EXTRA)
    transformers = require("transformers", TRAIN_EXTRA)
    require("gguf", TRAIN_EXTRA)
    cached = _BASE_CACHE.pop((str(base.path), device), None)
    if cached is not None:
        return cached
    verify_sha256(base.path, base.sha256, cache)
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(base.path.parent), gguf_file=base.path.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(base.path.parent), gguf_file=base.path.name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many kinds for an unsupported or damaged GGUF
        raise ModelError(f"could not load {base.path} for training: {exc}") from exc
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok, model.to(device)


def release_base(base: BaseModel, device: str, tok, peft_model) -> None:
    """Keep the base model (its LoRA layers removed, weights untouched) for the next training in this process."""
    _BASE_CACHE.clear()
    _BASE_CACHE[(str(base.path), device)] = (tok, peft_model.unload())


def resolve_device(device: str) -> str:
    torch = require("torch", TRAIN_EXTRA)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is available to torch here; use --device cpu")
    return device


# --------------------------------------------------------------------------- tokenising
def encode(tok, example: Example, system: str) -> tuple[list[int], list[int]]:
    """Token ids of prompt + answer + end-of-turn, and labels that score only the answer."""
    prompt = tok.apply_chat_template(example.messages(system), tokenize=False, add_generation_prompt=True)
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    a = tok(example.answer + tok.eos_token, add_special_tokens=False)["input_ids"]
    return p + a, [IGNORE] * len(p) + a


def _collate(torch, rows: Sequence[tuple[list[int], list[int]]], pad: int, device: str):
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return ids.to(device), labels.to(device), mask.to(device)


def _loss(torch, model, ids, labels, mask):
    """Mean cross-entropy over answer tokens; the vocabulary projection runs only where a label is scored (the
    prompt's logits are never needed, and the 49k-word projection is a fifth of the model's work)."""
    inner = model.get_base_model()
    hidden = inner.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
    target = labels[:, 1:]
    keep = target != IGNORE
    logits = inner.lm_head(hidden[keep])
    return torch.nn.functional.cross_entropy(logits.float(), target[keep])


def _lr_factor(config: TrainConfig, step: int) -> float:
    """Learning-rate multiplier at `step`: linear warm-up, then constant or a cosine decay to 0.1 at `steps`."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    return 0.1 + 0.45 * (1.0 + math.cos(math.pi * progress))


def _micro_batches(rows: Sequence[tuple[list[int], list[int]]], max_tokens: int) -> list[list]:
    """Cut one batch into passes of at most `max_tokens` padded tokens (a row longer than that is a pass alone)."""
    out: list[list] = []
    for row in sorted(rows, key=lambda r: len(r[0])):
        if out and (len(out[-1]) + 1) * len(row[0]) <= max_tokens:
            out[-1].append(row)
        else:
            out.append([row])
    return out


def _answer_tokens(rows: Sequence[tuple[list[int], list[int]]]) -> int:
    return sum(sum(1 for t in labels[1:] if t != IGNORE) for _, labels in rows)


# --------------------------------------------------------------------------- training
def _batches(lengths: Sequence[int], batch_size: int, seed: int, step: int) -> list[int]:
    """Example indices of optimizer step `step` (0-based). Each epoch is a seeded permutation cut into windows of
    16 batches; inside a window examples are sorted by length before being cut into batches (less padding: a
    quarter of the tokens on this data), and the batches are shuffled. Deterministic, so a resumed run sees
    exactly the batches an uninterrupted one would."""
    n = len(lengths)
    per_epoch = max(1, math.ceil(n / batch_size))
    epoch, index = divmod(step, per_epoch)
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(n))
    rng.shuffle(order)
    window = batch_size * 16
    batches = []
    for start in range(0, n, window):
        part = sorted(order[start: start + window], key=lambda i: lengths[i])
        batches += [part[j: j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches[index]


def _peak_memory_mb(torch, device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def train_lora(dataset: Dataset, config: TrainConfig, base: BaseModel, work: Path, *, raft_system: str = "",
               progress: bool = True, threads: int = 0, verify_cache: Path | None = None,
               on_step: Callable[[int, float], None] | None = None):
    """Train a LoRA on `dataset.train`, evaluating `dataset.held_out`; checkpoints go to `work/checkpoint.pt`.
    Returns (peft model with the best weights, tokenizer, TrainResult)."""
    torch = require("torch", TRAIN_EXTRA)
    peft = require("peft", TRAIN_EXTRA)
    from tqdm import tqdm

    device = resolve_device(config.device)
    # Thread count: on a CPU shared with other work, OpenMP threads spin-wait on each other and a step can take
    # 10x longer with 2 threads than with 1 (measured here); unless `threads` is set, the first steps are timed
    # with one thread and with all, and the faster is kept.
    if device == "cpu":
        trial = [threads] if threads else sorted({1, os.cpu_count() or 1})
    else:
        trial = [torch.get_num_threads()]
    timings: dict[int, float] = {}
    torch.set_num_threads(trial[0])
    torch.manual_seed(config.seed)
    tok, model = load_base(base, device, verify_cache)
    lora = peft.LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                           target_modules=list(config.target_modules), task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, lora)

    def system_of(ex: Example) -> str:
        return raft_system if ex.context else FINETUNE_SYSTEM

    train = [r for r in (encode(tok, ex, system_of(ex)) for ex in dataset.train) if len(r[0]) <= config.max_length]
    held = [r for r in (encode(tok, ex, system_of(ex)) for ex in dataset.held_out) if len(r[0]) <= config.max_length]
    lengths = [len(ids) for ids, _ in train]
    if not train:
        raise InputError(f"every training example is longer than max_length ({config.max_length} tokens)")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(_lr_factor, config))

    checkpoint = work / "checkpoint.pt"
    state = {"step": 0, "elapsed": 0.0, "best_loss": None, "best": None, "bad": 0, "history": [],
             "initial_held_out": None}
    resumed_from = 0
    if checkpoint.is_file():
        try:
            saved = torch.load(checkpoint, map_location=device, weights_only=False)
            peft.set_peft_model_state_dict(model, saved["lora"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            state = saved["state"]
            resumed_from = state["step"]
        except Exception:  # a checkpoint from an interrupted write or another version: start over
            checkpoint.unlink()

    def evaluate() -> float | None:
        if not held:
            return None
        model.eval()
        total = count = 0.0
        with torch.no_grad():
            for rows in _micro_batches(held, config.micro_batch_tokens):
                ids, labels, mask = _collate(torch, rows, tok.pad_token_id, device)
                n = _answer_tokens(rows)
                total += float(_loss(torch, model, ids, labels, mask)) * n
                count += n
        model.train()
        return total / count if count else None

    def lora_state():
        return {k: v.detach().clone() for k, v in peft.get_peft_model_state_dict(model).items()}

    def save_checkpoint():
        tmp = checkpoint.with_name(".checkpoint.pt.tmp")
        torch.save({"lora": peft.get_peft_model_state_dict(model), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "state": state}, tmp)
        os.replace(tmp, checkpoint)

    if state["initial_held_out"] is None:
        state["initial_held_out"] = evaluate()
    budget = config.max_minutes * 60
    started = time.perf_counter() - state["elapsed"]
    stopped = "steps"
    last_loss = None
    bar = tqdm(total=config.steps, initial=state["step"], desc="finetune", unit="step", disable=not progress,
               dynamic_ncols=True)
    model.train()
    try:
        step_seconds = 0.0
        if state.get("stopped"):  # resumed after the loop had ended: only saving was left to do
            stopped = state["stopped"]
        while state["step"] < config.steps and not state.get("stopped"):
            t0 = time.perf_counter()
            if t0 - started + step_seconds > budget:
                stopped = state["stopped"] = "budget"
                break
            calibrating = len(timings) < len(trial)
            if calibrating:
                n_threads = trial[len(timings)]
                torch.set_num_threads(n_threads)
            rows = [train[i] for i in _batches(lengths, config.batch_size, config.seed, state["step"])]
            scored = max(1, _answer_tokens(rows))
            loss_value = 0.0
            for part in _micro_batches(rows, config.micro_batch_tokens):  # the batch mean, accumulated pass by pass
                ids, labels, mask = _collate(torch, part, tok.pad_token_id, device)
                loss = _loss(torch, model, ids, labels, mask) * (_answer_tokens(part) / scored)
                loss.backward()
                loss_value += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            last_loss = loss_value
            step_seconds = time.perf_counter() - t0
            if calibrating and state["step"] > resumed_from + 1:  # the very first step pays one-off set-up costs
                timings[n_threads] = step_seconds
                if len(timings) == len(trial):
                    torch.set_num_threads(min(timings, key=timings.get))
            state["elapsed"] = time.perf_counter() - started
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.3f}", held_out=_fmt(state["best_loss"]))
            if on_step is not None:
                on_step(state["step"], last_loss)
            done = state["step"] >= config.steps
            if state["step"] % config.eval_every == 0 or done:
                held_loss = evaluate()
                state["history"].append({"step": state["step"], "train_loss": round(last_loss, 4),
                                         "held_out_loss": None if held_loss is None else round(held_loss, 4)})
                if held_loss is not None:
                    if state["best_loss"] is None or held_loss < state["best_loss"] - config.min_delta:
                        state["best_loss"], state["best"], state["bad"] = held_loss, lora_state(), 0
                    else:
                        state["bad"] += 1
                    bar.set_postfix(loss=f"{last_loss:.3f}", held_out=_fmt(held_loss))
                    if state["bad"] >= config.patience:
                        stopped = state["stopped"] = "early-stop"
                        break
            if state["step"] % config.checkpoint_every == 0:
                save_checkpoint()
    finally:
        bar.close()
    save_checkpoint()
    final_loss = evaluate()
    if state["best"] is not None and (final_loss is None or state["best_loss"] < final_loss):
        peft.set_peft_model_state_dict(model, state["best"])
        final_loss = state["best_loss"]
    model.eval()
    accuracy = held_out_accuracy(torch, model, tok, dataset.held_out[: config.eval_generate], device) \
        if config.eval_generate and dataset.held_out else None
    result = TrainResult(
        steps_run=state["step"], stopped=stopped, seconds=round(time.perf_counter() - started, 1),
        resumed_from=resumed_from, initial_held_out_loss=_round(state["initial_held_out"]),
        held_out_loss=_round(final_loss), train_loss=_round(last_loss), held_out_fact_accuracy=accuracy,
        peak_memory_mb=round(_peak_memory_mb(torch, device), 1), device=device, history=state["history"],
        threads=torch.get_num_threads() if device == "cpu" else 0)
    return model, tok, result


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def held_out_accuracy(torch, model, tok, examples: Sequence[Example], device: str) -> float:
    """Share of held-out questions whose greedy answer carries the reference answer's facts (its numbers, and
    most of its content words): knowledge reached through a phrasing training never saw."""
    from .. import grounding as g

    hits = 0
    for ex in examples:
        text = generate(torch, model, tok, ex.messages(FINETUNE_SYSTEM), device, max_new_tokens=40)
        ref_numbers = g.numbers(ex.answer)
        ref_terms = set(g.content_terms(ex.answer))
        got_terms = set(g.content_terms(text))
        ok = ref_numbers <= g.numbers(text) and (not ref_terms or len(ref_terms & got_terms) / len(ref_terms) >= 0.5)
        hits += int(ok)
    return round(hits / len(examples), 4) if examples else 0.0


def generate(torch, model, tok, messages, device: str, max_new_tokens: int = 64) -> str:
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=False)
    if not hasattr(ids, "shape"):
        ids = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(input_ids=ids.to(device), max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


# --------------------------------------------------------------------------- the whole run
def job_key(dataset: Dataset, config: TrainConfig, base: BaseModel, raft_system: str) -> str:
    """Identifies a training job: same data, config and base model → same key → a killed run resumes."""
    payload = json.dumps({"data": dataset.sha256, "config": config.to_json(), "base": base.sha256,
                          "system": [FINETUNE_SYSTEM, raft_system]}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def finetune(dataset: Dataset, config: TrainConfig, settings: Settings, bot: str, *, raft: bool = False,
             raft_system: str = "", on_step: Callable[[int, float], None] | None = None) -> tuple[Adapter, TrainResult]:
    """Train, convert and commit an adapter for `bot`. Returns the committed Adapter and the training result."""
    require_training()
    import torch  # noqa: F401  (imported by require_training)

    base = base_model_for(settings)
    key = job_key(dataset, config, base, raft_system)
    root = adapters_root(settings.home_path, bot)
    work = root / WORK_DIR / key[:16]
    if (root / WORK_DIR).is_dir():  # checkpoints of other (older) jobs cannot be resumed by this one
        for other in (root / WORK_DIR).iterdir():
            if other.name != work.name:
                shutil.rmtree(other, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model, tok, result = train_lora(dataset, config, base, work, raft_system=raft_system, progress=settings.progress,
                                    threads=settings.threads, verify_cache=settings.home_path / "models" / VERIFIED_CACHE,
                                    on_step=on_step)
    staged = work / "out"
    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir()
    model.save_pretrained(str(staged / PEFT_DIR))
    dataset.export_jsonl(staged / DATA_FILE)
    cfg = model.get_base_model().config
    gguf_name, gguf_error, convert_s = None, None, None
    if cfg.model_type == "llama":
        t0 = time.perf_counter()
        try:
            peft_to_gguf(staged / PEFT_DIR, staged / GGUF_FILE, cfg.num_attention_heads, cfg.num_key_value_heads)
            gguf_name = GGUF_FILE
        except (ModelError, OSError, KeyError, ValueError) as exc:  # the transformers runtime still serves it
            gguf_error = str(exc)
        convert_s = round(time.perf_counter() - t0, 2)
    else:
        gguf_error = f"no GGUF LoRA conversion for {cfg.model_type}; served with transformers + peft"
    import peft as _peft
    import transformers as _transformers

    manifest = {
        "created_at": time.time(),
        "base_model": {"name": base.name, "file": base.path.name, "sha256": base.sha256,
                       "architecture": cfg.model_type},
        "training": {**config.to_json(), "raft": raft, "steps_run": result.steps_run, "stopped": result.stopped,
                     "resumed_from": result.resumed_from, "seconds": result.seconds,
                     "total_seconds": round(time.perf_counter() - started, 1), "device": result.device,
                     "threads": result.threads, "peak_memory_mb": result.peak_memory_mb, "history": result.history,
                     "system_prompt": FINETUNE_SYSTEM, "raft_system_prompt": raft_system if raft else None,
                     "versions": {"torch": torch.__version__, "transformers": _transformers.__version__,
                                  "peft": _peft.__version__}},
        "data": {**dataset.summary(), "file": DATA_FILE},
        "documents": [dataclasses.asdict(d) for d in dataset.documents],
        "metrics": {"initial_held_out_loss": result.initial_held_out_loss, "held_out_loss": result.held_out_loss,
                    "train_loss": result.train_loss, "held_out_fact_accuracy": result.held_out_fact_accuracy},
        "files": {"peft": PEFT_DIR, "gguf": gguf_name, "gguf_error": gguf_error, "convert_seconds": convert_s,
                  "size_bytes": folder_size(staged / PEFT_DIR),
                  "gguf_size_bytes": folder_size(staged / GGUF_FILE) if gguf_name else None},
    }
    adapter = commit_adapter(staged, settings.home_path, bot, new_adapter_id(key), manifest)
    shutil.rmtree(work, ignore_errors=True)
    release_base(base, result.device, tok, model)
    return adapter, result
