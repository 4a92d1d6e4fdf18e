"""The zoo registry: what ``rpgen collect NAME`` can build.

Each :class:`Zoo` declares its name, a one-line description, its collect function (a
``module:function`` spec, imported only when that zoo is collected, so listing zoos stays cheap),
the default number of checkpoints, the evaluator spec for ``rpgen evaluate``, the preset it trains
best with, the options it takes beyond ``--out --num --seed --overwrite --progress`` (with their
defaults) and the message printed after collecting.

A new zoo: a module in ``rpgen/zoo/`` with a ``collect_*(out, *, num_checkpoints, seed, overwrite,
progress, **options)`` function, and one :class:`Zoo` entry in :data:`ZOOS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from rpgen.errors import RpgenError

__all__ = ["ZOOS", "Zoo", "check_options", "collect", "get_zoo"]


@dataclass(frozen=True)
class Zoo:
    """One registered zoo. ``options`` maps option name -> default (the CLI flag is ``--name``)."""

    name: str
    description: str
    collect: str  # "module:function"
    default_num: int
    message: Callable[[Path, Any, Mapping[str, Any]], str]  # (out, what collect returned, options) -> text
    evaluator: str | None = None
    preset: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def collect_function(self) -> Callable[..., Any]:
        module, _, function = self.collect.partition(":")
        return getattr(importlib.import_module(module), function)

    def train_hint(self, folder: Path) -> str:
        """How to train on what this zoo wrote to ``folder``."""
        return f"`rpgen train {folder} --out RUN" + (f" --config {self.preset}`" if self.preset else "`")


def _digits_message(out: Path, paths: list[Path], options: Mapping[str, Any]) -> str:
    if options.get("runs", 1) > 1:  # the quickstart preset is sized for one run; the defaults follow the zoo
        return (f"wrote {len(paths)} checkpoints of {options['runs']} training runs to {out}: train with "
                f"`rpgen train {out} --out RUN`")
    return f"wrote {len(paths)} checkpoints to {out}"


def _tasks_message(out: Path, _: Path, options: Mapping[str, Any]) -> str:
    from rpgen.zoo.digits_tasks import HELDOUT, HELDOUT_DIR, TRAIN_DIR

    modes = f" ({options['modes']} modes per task)" if options.get("modes", 1) > 1 else ""
    return (f"wrote the digits-tasks zoo{modes} to {out}: train with "
            f"{ZOOS['digits-tasks'].train_hint(out / TRAIN_DIR)}; {len(HELDOUT)} held-out tasks in {out / HELDOUT_DIR}")


def _minilm_message(out: Path, paths: list[Path], options: Mapping[str, Any]) -> str:
    zoo = ZOOS["minilm-sentiment"]
    return (f"wrote {len(paths)} {'DoRA' if options['dora'] else 'LoRA'} rank-{options['rank']} adapter folders "
            f"to {out}: train with {zoo.train_hint(out)}; evaluate with --evaluator {zoo.evaluator}")


def _gpt2_message(out: Path, paths: list[Path], options: Mapping[str, Any]) -> str:
    zoo = ZOOS["tiny-gpt2"]
    return (f"wrote {len(paths)} Trainer checkpoint folders to {out}: train with {zoo.train_hint(out)}; evaluate "
            f"with --evaluator {zoo.evaluator}")


ZOOS: Mapping[str, Zoo] = MappingProxyType({zoo.name: zoo for zoo in (
    Zoo("digits", "a small BatchNorm CNN on scikit-learn's 8x8 digits, one checkpoint per epoch (--runs R: "
        "R independent training runs, a diverse zoo: train that with the defaults, sized from the zoo)",
        "rpgen.zoo.digits:collect_digits", default_num=50, evaluator="rpgen.zoo.digits:evaluate",
        preset="quickstart", options={"runs": 1}, message=_digits_message),
    Zoo("digits-tasks", "1,022 binary tasks on the digits, one classifier head per task on a shared frozen "
        "extractor (--num per task); OUT/train has conditions.json, 30 tasks go to OUT/heldout; resumes "
        "when run again (--modes K: every task from K head initialisations, a multimodal zoo)",
        "rpgen.zoo.digits_tasks:collect_digits_tasks", default_num=3, options={"modes": 1},
        message=_tasks_message),
    Zoo("minilm-sentiment", "peft LoRA/DoRA adapters of all-MiniLM-L6-v2 that classify the sentiment of "
        "English words, one adapter folder per epoch (needs the adapters extra)",
        "rpgen.zoo.minilm_sentiment:collect_minilm_sentiment", default_num=10,
        evaluator="rpgen.zoo.minilm_sentiment:evaluate", preset="adapters",
        options={"rank": 4, "dora": False, "base": None}, message=_minilm_message),
    Zoo("tiny-gpt2", "a random-init GPT-2 (2 layers, tied embeddings) trained with transformers.Trainer on "
        "running sums mod 8, its checkpoint-N/ folders as they are (needs the adapters extra)",
        "rpgen.zoo.tiny_gpt2:collect_tiny_gpt2", default_num=20, evaluator="rpgen.zoo.tiny_gpt2:evaluate",
        message=_gpt2_message),
)})  # read-only: a new zoo is a new entry here


def get_zoo(name: str) -> Zoo:
    """The registered zoo ``name``, else a one-line error listing the zoos."""
    if name not in ZOOS:
        raise RpgenError(f"unknown zoo {name!r} (available: {', '.join(ZOOS)})")
    return ZOOS[name]


def check_options(zoo: Zoo, given: Mapping[str, Any]) -> dict[str, Any]:
    """``zoo``'s options with its defaults, overridden by ``given``; an option it does not take is an error."""
    for option in given:
        if option not in zoo.options:
            takers = [z.name for z in ZOOS.values() if option in z.options]
            where = f"the {' and '.join(takers)} zoo only" if takers else "no zoo"
            takes = ", ".join(f"--{o}" for o in zoo.options) or "no zoo options"
            raise RpgenError(f"--{option} applies to {where}; {zoo.name} takes {takes}")
    return {**zoo.options, **given}


def collect(name: str, out: str | Path, *, num: int | None = None, seed: int = 0, overwrite: bool = False,
            progress: bool = True, **options: Any) -> str:
    """Build zoo ``name`` in ``out``; return the message to print. ``options`` are the zoo's own."""
    zoo = get_zoo(name)
    options = check_options(zoo, options)
    out = Path(out)
    result = zoo.collect_function()(out, num_checkpoints=zoo.default_num if num is None else num, seed=seed,
                                    overwrite=overwrite, progress=progress, **options)
    return zoo.message(out, result, options)
