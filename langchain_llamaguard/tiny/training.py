"""Train tiny guards for a few seconds so they answer like the real ones (tests and the offline demo).

Prompts are rendered, tokenized and (for images) expanded by the package's own engine, so a trained tiny guard
answers ``\\n\\nunsafe\\nS9<|eot|>`` to a weapons request, ``\\n\\nunsafe\\nS14`` to interpreter abuse,
``\\n\\nsafe`` to benign text, and ``safe`` when the flagged category is excluded.

Training is deterministic on a given machine (fixed seeds, deterministic algorithms, one thread). Floating point
still differs between CPUs, so every trained guard is then **checked** against the check set of
:mod:`~langchain_llamaguard.tiny.data` (every learned verdict a test relies on) with a margin: P(unsafe) >= 0.9
where the target is unsafe (with the right categories), <= 0.1 where it is safe. Where a check falls short,
training goes on for a bounded number of rounds; if it still falls short, the guard is built again from scratch
with another seed (at most :data:`ATTEMPTS` times), and only then does the build fail, naming the cases. The
margins, and the seed that made the guard, are written into the guard's ``training.json``.

``LLAMAGUARD_TINY_SEED`` (default 0) sets the seed; each seed has its own cached guards.

Example:
    >>> path = trained_llama_guard("llama-guard-4")   # doctest: +SKIP  (cached on disk after the first call)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import Check, Example, llama_guard_checks, llama_guard_examples, prompt_guard_checks, prompt_guard_examples
from .models import build_llama_guard_3, build_llama_guard_4, build_prompt_guard
from .tokenizers import cache_dir

TRAINING_VERSION = "20"
SEED_ENV = "LLAMAGUARD_TINY_SEED"
MARGIN = 0.9
"""A checked verdict needs P(unsafe) >= MARGIN (unsafe target) or <= 1 - MARGIN (safe target)."""
HEADROOM = 0.02
"""Training goes on while a check is within this of its margin (so another CPU's rounding cannot tip it over);
only a check below the margin itself fails the build."""
CHECK_COPIES = 3  # each check case appears this many times in the training data
EXTRA_ROUNDS = 6  # at most this many rounds of further training while a check is short of margin + headroom
ATTEMPTS = 3  # a guard that still misses its checks is rebuilt from scratch with another seed, this many times
SEED_STRIDE = 1000  # attempt k trains with seed + k * SEED_STRIDE
BATCH_SIZE = 16


class TinyGuardTrainingError(RuntimeError):
    """A tiny guard still misses its check set after the bounded extra training."""


def tiny_seed() -> int:
    """The training seed: ``LLAMAGUARD_TINY_SEED``, default 0."""
    raw = os.environ.get(SEED_ENV, "0").strip() or "0"
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{SEED_ENV} must be an integer, got {raw!r}") from None


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Fixed seeds, deterministic algorithms and one thread while training (restored afterwards)."""
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


@dataclass
class _Item:
    """One training sequence: prompt ids + answer ids, the answer's length, image pixels, and its check (if any)."""

    ids: list[int]
    answer_len: int  # Prompt Guard: the window's label
    pixels: list[Any]
    check: int | None = None


def _batch(rng: random.Random, items: list[_Item], size: int = BATCH_SIZE) -> list[_Item]:
    """A batch of items of similar length, around a random anchor item (every item is as likely to be the anchor):
    little padding, so the few long ones (images, long windows) do not make every batch long."""
    shuffled = rng.sample(items, len(items))
    ranked = sorted(shuffled, key=lambda it: len(it.ids) // 64)  # stable: shuffled within 64-token buckets
    anchor = rng.randrange(len(ranked))
    start = min(max(anchor - size // 2, 0), max(len(ranked) - size, 0))
    return ranked[start : start + size]


def _margin(score: float, unsafe: bool) -> float:
    return score - MARGIN if unsafe else (1.0 - MARGIN) - score


# -- Llama Guard ------------------------------------------------------------------------------------------------
class _VocabSubset:
    """Trains the embedding and output rows of the tokens the data uses; all other rows keep their initial values.

    A tiny guard's vocabulary (128k-202k tokens) dwarfs the rest of the model, and the rows of tokens that never
    occur get no useful signal. In the softmax they stand as one logit, ``log(count)``: what initial rows of that
    many tokens (logits near 0) add up to. The final check runs the real model with the whole vocabulary.
    """

    def __init__(self, model: Any, used: set[int], keep: Sequence[int]) -> None:
        import torch

        self.emb = model.get_input_embeddings().weight
        self.head = model.get_output_embeddings().weight
        self.tied = self.head.data_ptr() == self.emb.data_ptr()
        rows = sorted(used - set(keep))  # kept rows stay exact (Llama 4 finds image slots by their embedding)
        self.rows = torch.tensor(rows, dtype=torch.long)
        self.index = torch.full((self.emb.shape[0],), -1, dtype=torch.long)
        self.index[self.rows] = torch.arange(len(rows))
        self.emb.requires_grad_(False)
        self.head.requires_grad_(False)
        self.d_emb = torch.nn.Parameter(torch.zeros(len(rows), self.emb.shape[1]))
        self.d_head = self.d_emb if self.tied else torch.nn.Parameter(torch.zeros(len(rows), self.emb.shape[1]))
        self.rest = math.log(self.head.shape[0] - len(rows))

    def parameters(self) -> list[Any]:
        return [self.d_emb] if self.tied else [self.d_emb, self.d_head]

    def embed(self, ids: Any) -> Any:
        import torch

        slot = self.index[ids]
        delta = torch.where((slot >= 0).unsqueeze(-1), self.d_emb[slot.clamp(min=0)], 0.0)
        return self.emb[ids] + delta

    def logits(self, hidden: Any) -> Any:
        """Logits over the trained rows, plus one last column standing for all the others."""
        import torch

        w = self.head[self.rows] + self.d_head
        out = hidden @ w.T
        return torch.cat([out, torch.full_like(out[..., :1], self.rest)], dim=-1)

    def targets(self, labels: Any) -> Any:
        import torch

        return torch.where(labels >= 0, self.index[labels.clamp(min=0)], -100)

    def merge(self) -> None:
        """Write the trained rows into the model's own weights (:meth:`unmerge` puts the initial rows back)."""
        import torch

        self._initial = (self.emb[self.rows].clone(), self.head[self.rows].clone())
        with torch.no_grad():
            self.emb[self.rows] = self._initial[0] + self.d_emb
            if not self.tied:
                self.head[self.rows] = self._initial[1] + self.d_head

    def unmerge(self) -> None:
        import torch

        with torch.no_grad():
            self.emb[self.rows] = self._initial[0]
            self.head[self.rows] = self._initial[1]


def _load_for_training(path: Path, model_format: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor, AutoTokenizer

    if model_format == "llama-guard-4":
        from transformers import Llama4ForConditionalGeneration

        config = AutoConfig.from_pretrained(path)
        config.text_config.attention_chunk_size = 8192  # the real checkpoint's null breaks a forward pass
        model = Llama4ForConditionalGeneration.from_pretrained(path, config=config, dtype=torch.float32)
        return model, AutoProcessor.from_pretrained(path)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)


def _hidden(model: Any, embeds: Any, ids: Any, mask: Any, pixels: list[Any], image_token: int | None) -> Any:
    """The last hidden states, from input embeddings (and image features spliced in, as the model does)."""
    import torch

    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    if hasattr(model, "language_model"):  # Llama 4: vision encoder + projector, then the text model
        if pixels:
            px = torch.cat(pixels).to(embeds.dtype)
            feats = model.get_image_features(pixel_values=px, return_dict=True).last_hidden_state
            flat = model.multi_modal_projector(feats.reshape(-1, feats.shape[-1]))
            slots = (ids == image_token).unsqueeze(-1).expand_as(embeds)
            embeds = embeds.masked_scatter(slots, flat.to(embeds.dtype))
        text_model = model.language_model.model
    else:
        text_model = model.model
    out = text_model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=False)
    return out.last_hidden_state


def _llama_guard_items(guard: Any, examples: list[Example], checks: list[Check]) -> list[_Item]:
    """Encode training examples and check cases exactly as the engine encodes a check."""
    eot = guard.tokens.stop[0]

    def item(conversation: Any, target: str, excluded: Sequence[str], role: str | None, check: int | None) -> _Item:
        prompts, _ = guard.prepare(conversation, role=role, excluded_categories=excluded)
        if len(prompts) != 1:
            raise ValueError(f"a training conversation does not fit the tiny guard's context: {conversation!r}")
        ids, pixels = guard.backend._expand_images(prompts[0])
        answer = [guard.tokens.lead, *guard.encoder.text_ids(target), eot]
        return _Item(ids + answer, len(answer), pixels, check)

    items = []
    for ex in examples:
        conv = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(ex.turns)]
        items.append(item(conv, ex.target, ex.excluded, None, None))
    for k, c in enumerate(checks):
        items += [item(c.conversation, c.target, c.excluded, c.role, k)] * CHECK_COPIES
    return items


def check_llama_guard(guard: Any, checks: list[Check]) -> list[dict[str, Any]]:
    """Each check's verdict, score and margin (negative: short of it) on ``guard`` (built with on_error="unsafe")."""
    out = []
    for c in checks:
        v = guard.check(c.conversation, role=c.role, excluded_categories=c.excluded)
        unsafe = c.target != "safe"
        ok = v.error is None and v.safe == (not unsafe) and (not unsafe or v.categories == c.categories)
        margin = _margin(v.score, unsafe) if ok else -1.0
        got = "error: " + v.error if v.error else ("safe" if v.safe else "unsafe " + ",".join(v.categories))
        out.append(
            {"name": c.name, "target": c.target.replace("\n", " "), "got": got, "score": v.score, "margin": margin}
        )
    return out


def _train_llama_guard(path: Path, model_format: str, *, steps: int, seed: int) -> dict[str, Any]:
    import torch

    from ..llama_guard import LlamaGuardEngine as LlamaGuard

    fmt_checks = llama_guard_checks(model_format)
    with _deterministic(seed):
        model, processor = _load_for_training(path, model_format)
        guard = LlamaGuard.from_model(model, processor, model_format=model_format, on_error="unsafe")
        image_token = getattr(model.config, "image_token_index", None)
        examples = llama_guard_examples(seed, with_s14="S14" in guard.format.categories)
        items = _llama_guard_items(guard, examples, fmt_checks)
        subset = _VocabSubset(model, {t for it in items for t in it.ids}, keep=[image_token] if image_token else [])
        params = subset.parameters() + [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=4e-3, weight_decay=0.0)
        rng = random.Random(seed)

        def step(batch: list[_Item]) -> float:
            ids, mask = guard.backend._left_pad([b.ids for b in batch])  # padded as the engine pads a check
            span = max(b.answer_len for b in batch)
            labels = torch.full((len(batch), span), -100, dtype=torch.long)
            for i, b in enumerate(batch):
                labels[i, span - b.answer_len :] = torch.tensor(b.ids[-b.answer_len :])
            pixels = [px for b in batch for px in b.pixels]
            hidden = _hidden(model, subset.embed(ids), ids, mask, pixels, image_token)
            logits = subset.logits(hidden[:, -span - 1 : -1])
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), subset.targets(labels).reshape(-1)
            )
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            return float(loss.detach())

        model.train()
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=steps, pct_start=0.1)
        loss = float("nan")
        for _ in range(steps):
            loss = step(_batch(rng, items))
            sched.step()
        _, rounds = _extra_rounds(
            lambda: _checked_in_memory(guard, model, subset, fmt_checks), items, step, opt, rng, steps
        )
        subset.merge()
        model.eval()
        if model_format == "llama-guard-4":
            model.config.text_config.attention_chunk_size = None  # keep the real checkpoint's (pitfall) value
        model.save_pretrained(path)
    final = check_llama_guard(LlamaGuard.from_pretrained(str(path), on_error="unsafe"), fmt_checks)
    require_margins(model_format, seed, final, rounds)
    return {"final_loss": loss, "steps": steps, "extra_rounds": rounds, "examples": len(items), "checks": final}


def _checked_in_memory(guard: Any, model: Any, subset: _VocabSubset, checks: list[Check]) -> list[dict[str, Any]]:
    """Check the model being trained: its trained rows merged in for the check, then taken out again."""
    model.eval()
    subset.merge()
    guard.backend.clear_caches()  # cached prefixes were computed with older weights
    try:
        return check_llama_guard(guard, checks)
    finally:
        subset.unmerge()
        guard.backend.clear_caches()
        model.train()


def _extra_rounds(check: Any, items: list[_Item], step: Any, opt: Any, rng: random.Random, steps: int):
    """Train on while checks are short of their margin plus :data:`HEADROOM`, at a low learning rate. A quarter of
    every batch comes from the check cases, the short ones twice as likely as the rest; the rest from everything.
    Training on the short cases alone pulls their neighbours over: "bomb" (S9) and "poison" (S1) traded places
    for six rounds that way, where the whole check set settles them in two."""
    results = check()
    rounds = 0
    while rounds < EXTRA_ROUNDS and any(r["margin"] < HEADROOM for r in results):
        rounds += 1
        short = {k for k, r in enumerate(results) if r["margin"] < HEADROOM}
        focus = [it for it in items if it.check in short] + [it for it in items if it.check is not None]
        for group in opt.param_groups:
            group["lr"] = 1e-3
        for _ in range(max(steps // 4, 40)):
            batch = _batch(rng, focus, BATCH_SIZE // 4)
            step(batch + _batch(rng, items, BATCH_SIZE - len(batch)))
        results = check()
    return results, rounds


def require_margins(model_format: str, seed: int, results: list[dict[str, Any]], rounds: int = 0) -> None:
    """Raise :class:`TinyGuardTrainingError`, naming every case, when a check falls short of its margin."""
    short = [r for r in results if r["margin"] < 0]
    if short:
        lines = "\n".join(
            f"  - {r['name']}: wanted {r['target']}, got {r['got']} (score {r['score']:.3f})" for r in short
        )
        raise TinyGuardTrainingError(
            f"the tiny {model_format} guard (seed {seed}) misses {len(short)} of {len(results)} checks by the "
            f"margin (P(unsafe) >= {MARGIN} where unsafe, <= {1 - MARGIN:.1f} where safe) after {rounds} "
            f"extra rounds of training:\n{lines}"
        )


# -- Prompt Guard -----------------------------------------------------------------------------------------------
def check_prompt_guard(guard: Any, checks: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """Each check's score (P(malicious), max over windows) and margin."""
    out = []
    for (text, label), v in zip(checks, guard.batch_check([t for t, _ in checks]), strict=True):
        ok = v.safe == (label == 0)
        out.append(
            {
                "name": text[:60],
                "target": "malicious" if label else "benign",
                "got": v.label,
                "score": v.score,
                "margin": _margin(v.score, bool(label)) if ok else -1.0,
            }
        )
    return out


def _train_prompt_guard(path: Path, *, steps: int, seed: int) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ..prompt_guard import PromptGuardEngine as PromptGuard

    checks = prompt_guard_checks()
    with _deterministic(seed):
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32)
        guard = PromptGuard(model, tok)
        items: list[_Item] = []
        for text, label in prompt_guard_examples(seed):
            items += [_Item(w, label, []) for w in guard.windows(text)]
        for k, (text, label) in enumerate(checks):
            windows = guard.windows(text)  # a payload sits at the end: only the last window holds it
            for j, w in enumerate(windows):
                items += [_Item(w, label if j == len(windows) - 1 else 0, [], k)] * CHECK_COPIES
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        rng = random.Random(seed)
        pad = tok.pad_token_id or 0

        def step(batch: list[_Item]) -> float:
            width = max(len(b.ids) for b in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for i, b in enumerate(batch):
                ids[i, : len(b.ids)] = torch.tensor(b.ids)
                mask[i, : len(b.ids)] = 1
            out = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([b.answer_len for b in batch]))
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            return float(out.loss.detach())

        def check() -> list[dict[str, Any]]:
            model.eval()
            try:
                return check_prompt_guard(guard, checks)
            finally:
                model.train()

        model.train()
        loss = float("nan")
        for _ in range(steps):
            loss = step(_batch(rng, items))
        _, rounds = _extra_rounds(check, items, step, opt, rng, steps)
        model.eval()
        model.save_pretrained(path)
    final = check_prompt_guard(PromptGuard.from_pretrained(str(path)), checks)
    require_margins("prompt-guard-2", seed, final, rounds)
    return {"final_loss": loss, "steps": steps, "extra_rounds": rounds, "examples": len(items), "checks": final}


# -- building, caching --------------------------------------------------------------------------------------------
_BUILDERS = {
    "llama-guard-4": lambda p, s: build_llama_guard_4(p, seed=s),
    "llama-guard-3-8b": lambda p, s: build_llama_guard_3(p, variant="8b", seed=s),
    "llama-guard-3-1b": lambda p, s: build_llama_guard_3(p, variant="1b", seed=s),
    "prompt-guard-2": lambda p, s: build_prompt_guard(p, seed=s),
}
_STEPS = {"llama-guard-4": 240, "llama-guard-3-8b": 240, "llama-guard-3-1b": 200, "prompt-guard-2": 120}
TINY_GUARDS = tuple(_BUILDERS)


def _build_and_train(model_format: str, tmp: Path, seed: int) -> tuple[dict[str, Any], int]:
    """Build and train one guard into ``tmp``: (its stats, the seed that made it). A run that misses its checks
    (floating point differs between CPUs, and a few seconds of training can settle badly on one) starts over
    from a fresh model and data order, up to :data:`ATTEMPTS` times, with seeds ``seed``, ``seed + SEED_STRIDE``,
    ...; only when every attempt misses does the build fail, naming the last one's cases."""
    for attempt in range(ATTEMPTS):
        run_seed = seed + SEED_STRIDE * attempt
        shutil.rmtree(tmp, ignore_errors=True)
        _BUILDERS[model_format](tmp, run_seed)
        try:
            if model_format == "prompt-guard-2":
                return _train_prompt_guard(tmp, steps=_STEPS[model_format], seed=run_seed), run_seed
            return _train_llama_guard(tmp, model_format, steps=_STEPS[model_format], seed=run_seed), run_seed
        except TinyGuardTrainingError as exc:
            if attempt == ATTEMPTS - 1:
                raise TinyGuardTrainingError(f"{exc}\n(every one of {ATTEMPTS} attempts missed)") from None
            print(f"{exc}\nstarting over with seed {run_seed + SEED_STRIDE}", flush=True)
    raise AssertionError("unreachable")  # pragma: no cover


def trained_path(model_format: str, *, root: str | Path | None = None, seed: int | None = None) -> Path:
    """Where the tiny trained guard for ``model_format`` and ``seed`` is cached (trained or not yet)."""
    if model_format not in _BUILDERS:
        raise ValueError(f"unknown tiny guard {model_format!r}; valid: {', '.join(_BUILDERS)}")
    seed = tiny_seed() if seed is None else seed
    base = Path(root) if root else cache_dir()
    return base / f"tiny-{model_format}-trained-v{TRAINING_VERSION}-{_recipe_hash()}-seed{seed}"


def _recipe_hash() -> str:
    """A hash of what decides a tiny guard (this module, its data and check sets, the model builders), so a guard
    trained or checked by an older recipe is never reused."""
    import hashlib

    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in ("training.py", "data.py", "models.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:8]


def trained_llama_guard(model_format: str = "llama-guard-4", *, root: str | Path | None = None) -> Path:
    """Path of a tiny trained guard (``llama-guard-4``, ``-3-8b``, ``-3-1b`` or ``prompt-guard-2``).

    Built, trained and checked on first use, then cached under ``root`` (default: ``LLAMAGUARD_CACHE``).
    """
    from filelock import FileLock

    seed = tiny_seed()
    path = trained_path(model_format, root=root, seed=seed)
    marker = path / "training.json"
    if marker.exists():
        return path
    with FileLock(str(path.parent / f"{path.name}.lock")):  # one builder at a time across processes
        if marker.exists():
            return path
        for stale in path.parent.glob(f"{path.name}.tmp*"):  # left by an interrupted build
            shutil.rmtree(stale, ignore_errors=True)
        tmp = path.parent / f"{path.name}.tmp{os.getpid()}"
        start = time.perf_counter()
        stats, run_seed = _build_and_train(model_format, tmp, seed)
        seconds = round(time.perf_counter() - start, 1)
        stats = {"model_format": model_format, "seed": seed, "run_seed": run_seed, "seconds": seconds, **stats}
        stats["min_margin"] = min(r["margin"] for r in stats["checks"])
        (tmp / "training.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False))
        if path.exists():  # a stale, unmarked folder from an interrupted run
            shutil.rmtree(path)
        tmp.rename(path)
    return path


def trained_prompt_guard(*, root: str | Path | None = None) -> Path:
    """Path of a tiny trained Prompt Guard 2 (``DebertaV2ForSequenceClassification``)."""
    return trained_llama_guard("prompt-guard-2", root=root)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m langchain_llamaguard.tiny.training [NAME ...]``: train (and check) the tiny guards now."""
    import sys

    names = list(argv if argv is not None else sys.argv[1:]) or list(TINY_GUARDS)
    failed = []
    for name in names:
        try:
            print(trained_llama_guard(name), flush=True)
        except TinyGuardTrainingError as exc:
            print(exc, file=sys.stderr, flush=True)
            failed.append(name)
    if failed:
        raise SystemExit(f"tiny guards that missed their checks: {', '.join(failed)}")


if __name__ == "__main__":
    main()
