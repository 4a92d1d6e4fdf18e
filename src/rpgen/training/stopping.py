"""When training stops: generated models evaluated while the generator trains.

With ``train.evaluator`` (``rpgen train --evaluator SPEC``), every ``train.eval_every`` steps the
generator being trained samples ``train.eval_models`` models (the same seed every time, so two
evaluations differ only by the weights), the evaluator scores them, and the scores go to
``metrics.jsonl`` beside the loss, with the mean of a fixed sample of up to
:data:`CHECKPOINT_SAMPLE` training checkpoints (scored once). Training stops when the generated
mean has reached the checkpoints' mean, less the tolerance, at :data:`PATIENCE` evaluations in a
row; the generator kept is the best one evaluated (``best.safetensors`` while training).

The tolerance (``train.stop_tolerance``, "auto") is two standard deviations of the sampled
checkpoints' scores: a generated mean that close to the checkpoints' lies within their usual
spread, in the metric's own units. On the quickstart zoo the checkpoints' deviation is 0.2 pp and
the generated mean levels off 0.2-0.4 pp below theirs (bench/results/time_to_quality.md).

Without an evaluator, :class:`LossPlateau` (``train.stop_on_plateau``) ends training in the
second half of the schedule once the mean loss of a window of steps (a tenth of the schedule,
at least 100) has stopped falling by :data:`PLATEAU_GAIN` at two windows in a row.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import save_file

from rpgen.config import Config
from rpgen.errors import RpgenError
from rpgen.evaluation.evaluator import higher_is_better, load_evaluator, run_evaluator
from rpgen.safety.atomic import append_line, atomic_path

CHECKPOINT_SAMPLE = 16
"""Training checkpoints scored once, spread evenly over the zoo."""
PATIENCE = 2
"""Evaluations in a row that must reach the checkpoints before training stops."""
BEST = "best.safetensors"
"""The best generator evaluated so far, in the run directory while training."""
EVAL_SAMPLE_STEPS = 10
"""Sampling steps of the models generated while training (DDIM, or the run's DPM-Solver++): at 10
steps they score as at 60 or 1,000 on the quickstart run (bench/results/sampling.md), for a sixth
of the cost of the default 60."""


PLATEAU_GAIN = 0.1
"""A window's mean loss must be this much (relatively) below the previous window's to count as progress."""


def auto_eval_every(steps: int) -> int:
    """Steps between evaluations: a tenth of the schedule, at least 100."""
    return max(100, steps // 10)


@dataclass
class Reference:
    """The scores of the sampled training checkpoints, and what counts as reaching them."""

    metric: str
    scores: list[float]
    tolerance: float

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores)

    def reached(self, value: float) -> bool:
        """Whether a generated mean of ``value`` is as good as the checkpoints' mean, less the tolerance."""
        if higher_is_better(self.metric):
            return value >= self.mean - self.tolerance
        return value <= self.mean + self.tolerance


@dataclass
class Stopper:
    """Scores the generator every ``every`` steps and says when to stop (see the module docstring)."""

    spec: str
    every: int
    models: int
    seed: int
    reference: Reference
    run_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    _fn: Any = None

    @classmethod
    def start(cls, spec: str, *, config: Config, checkpoints: Sequence[Any], run_dir: Path) -> Stopper:
        """Load the evaluator and score the checkpoint sample (one line naming the evaluator on failure)."""
        tc = config.train
        fn = load_evaluator(spec)
        picked = _spread(len(checkpoints), CHECKPOINT_SAMPLE)
        evaluations = [run_evaluator(fn, {k: checkpoints[i][k] for k in checkpoints[i]},
                                     name=f"checkpoint {checkpoints[i].path} (evaluator {spec})")
                       for i in picked]
        metric = next(iter(evaluations[0].metrics))
        scores = [e.metrics[metric] for e in evaluations]
        if not all(math.isfinite(s) for s in scores):
            raise RpgenError(f"evaluator {spec} returned {metric} = {scores} on the training checkpoints; "
                             "expected finite numbers")
        tolerance = (2 * statistics.pstdev(scores) if tc.stop_tolerance == "auto" else float(tc.stop_tolerance))
        every = tc.eval_every or auto_eval_every(tc.steps)
        return cls(spec, every, tc.eval_models, tc.seed, Reference(metric, scores, tolerance), run_dir, _fn=fn)

    def due(self, step: int, total: int) -> bool:
        return step % self.every == 0 or step == total

    def evaluate(self, run: Any, step: int) -> dict[str, Any]:
        """Score ``run.sample(...)`` (a :class:`rpgen.run.Run` holding the generator as trained so
        far); record it, and save the weights when they are the best so far."""
        sample = run.config.sample
        sampler = sample.sampler if sample.sampler in ("ddim", "dpm") else "ddim"
        try:
            models = run.sample(self.models, seed=self.seed, sampler=sampler,
                                steps=min(sample.steps, EVAL_SAMPLE_STEPS))
        except RpgenError as e:
            raise RpgenError(f"evaluating the generator at step {step} (evaluator {self.spec}): {e}") from None
        scores = []
        for i, state_dict in enumerate(models):
            if not all(bool(t.isfinite().all()) for t in state_dict.values() if t.is_floating_point()):
                scores.append(math.nan)  # a broken model: never "reached", never the best
                continue
            evaluation = run_evaluator(self._fn, state_dict, name=f"generated model {i} at step {step} "
                                                                   f"(evaluator {self.spec})")
            value = evaluation.metrics.get(self.reference.metric, math.nan)
            if not math.isfinite(value):
                raise RpgenError(f"evaluator {self.spec} returned {self.reference.metric} = {value} on generated "
                                 f"model {i} at step {step}; expected a finite number")
            scores.append(value)
        finite = [s for s in scores if math.isfinite(s)]
        mean = statistics.fmean(scores) if len(finite) == len(scores) else math.nan
        record = {"step": step, "metric": self.reference.metric, "generated_mean": mean,
                  "generated_min": min(finite) if finite else math.nan, "generated": scores,
                  "checkpoints_mean": self.reference.mean, "tolerance": self.reference.tolerance,
                  "reached": bool(math.isfinite(mean) and self.reference.reached(mean))}
        if math.isfinite(mean) and (self.best is None or self._better(mean, self.best["generated_mean"])):
            record["best"] = True
            with atomic_path(self.run_dir / BEST) as tmp:
                save_file({k: v.detach().cpu().contiguous() for k, v in run.model.state_dict().items()}, str(tmp),
                          metadata={"step": str(step), "generated_mean": repr(mean)})
        self.history.append(record)
        return record

    @property
    def best(self) -> dict[str, Any] | None:
        marked = [r for r in self.history if r.get("best")]
        return marked[-1] if marked else None

    def _better(self, a: float, b: float) -> bool:
        return a > b if higher_is_better(self.reference.metric) else a < b

    def should_stop(self) -> bool:
        recent = self.history[-PATIENCE:]
        return len(recent) == PATIENCE and all(r["reached"] for r in recent)

    def reason(self) -> str:
        r = self.history[-1]
        return (f"the generated mean {self.reference.metric} reached the checkpoints' "
                f"({r['checkpoints_mean']:.4g} less {r['tolerance']:.3g}) at {PATIENCE} evaluations in a row "
                f"(steps {', '.join(str(h['step']) for h in self.history[-PATIENCE:])})")


def _spread(n: int, k: int) -> list[int]:
    """``min(n, k)`` indices spread evenly over ``range(n)``."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


@contextmanager
def evaluating(module: torch.nn.Module, ema: list[torch.Tensor] | None) -> Iterator[torch.nn.Module]:
    """``module`` in eval mode with its EMA weights in place (when training keeps one, as the saved
    generator will), restored afterwards."""
    saved = None
    if ema is not None:
        saved = [p.detach().clone() for p in module.parameters()]
        with torch.no_grad():
            for p, e in zip(module.parameters(), ema):
                p.copy_(e)
    module.eval()
    try:
        yield module
    finally:
        module.train()
        if saved is not None:
            with torch.no_grad():
                for p, s in zip(module.parameters(), saved):
                    p.copy_(s)


def log_evaluation(metrics_file: Path, stage: str, record: dict[str, Any], elapsed_s: float) -> None:
    """One line of ``metrics.jsonl`` for an evaluation (``"eval"`` beside the step)."""
    append_line(metrics_file, json.dumps({"stage": stage, "step": record["step"], "eval": record,
                                          "elapsed_s": round(elapsed_s, 3)}))


def read_history(metrics_file: Path) -> list[dict[str, Any]]:
    """The evaluations logged so far (a resumed run continues their count)."""
    if not metrics_file.is_file():
        return []
    rows = [json.loads(line) for line in metrics_file.read_text(encoding="utf-8").splitlines() if line]
    return [r["eval"] for r in rows if "eval" in r]


@dataclass
class LossPlateau:
    """The loss-plateau rule (see the module docstring), fed the logged losses."""

    steps: int
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss since the last log)

    @property
    def window(self) -> int:
        return auto_eval_every(self.steps)

    def add(self, step: int, loss: float) -> None:
        self.losses.append((step, loss))

    def should_stop(self, step: int) -> bool:
        """Whether training may end at ``step`` (a window boundary in the second half of the schedule)."""
        w = self.window
        if step % w or step < max(self.steps // 2, 3 * w) or step >= self.steps:
            return False
        means = [self._mean(step - k * w, step - (k - 1) * w) for k in (3, 2, 1)]  # oldest first
        if any(m is None for m in means):
            return False
        return all(later > (1 - PLATEAU_GAIN) * earlier for earlier, later in zip(means, means[1:]))

    def _mean(self, start: int, stop: int) -> float | None:
        values = [v for s, v in self.losses if start < s <= stop]
        return statistics.fmean(values) if values else None

    def reason(self, step: int) -> str:
        return (f"the loss stopped falling: its mean over each of the last two windows of {self.window} steps "
                f"was less than {PLATEAU_GAIN:.0%} below the window before (step {step})")


def read_losses(metrics_file: Path) -> list[tuple[int, float]]:
    """The (step, loss) lines logged so far."""
    if not metrics_file.is_file():
        return []
    rows = [json.loads(line) for line in metrics_file.read_text(encoding="utf-8").splitlines() if line]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]
