"""The typed result of an evaluation: every number that ``results.json`` holds.

:meth:`EvaluationResult.to_dict` gives the ``results.json`` content (NaN/inf become null, so the
file is strict JSON); the renderers (:mod:`rpgen.evaluation.report`, :mod:`rpgen.evaluation.plots`)
read the dataclass. Group names: ``"checkpoints"``, ``"generated"`` and one per baseline
(:func:`rpgen.evaluation.baselines.baselines`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Summary:
    """The primary metric of one group: statistics over its finite values."""

    n: int
    n_nonfinite: int  # values that are NaN or inf (left out of the statistics)
    mean: float | None  # None when no value is finite
    min: float | None
    max: float | None
    std: float | None  # population std


@dataclass(frozen=True)
class EvaluationResult:
    """What ``rpgen evaluate`` measured; lists of per-model values follow the ``*_files`` order."""

    metric: str  # the primary metric: the evaluator's first key
    higher_is_better: bool
    evaluator: str  # the spec
    checkpoints: list[float]  # primary metric of each training checkpoint
    generated: list[float]  # ... of each generated model
    baselines: dict[str, list[float]]  # ... of each baseline model, by baseline name
    checkpoint_files: list[str]
    generated_files: list[str]
    checkpoint_metrics: list[dict[str, float]]  # every metric the evaluator returned
    generated_metrics: list[dict[str, float]]
    novelty: dict[str, list[float]]  # by group; NaN for a model with non-finite weights
    novelty_unit: float  # the checkpoints' median nearest-neighbour distance
    nearest_checkpoint: dict[str, list[int | None]]  # "generated" and "checkpoints"; None: non-finite weights
    iou: dict[str, list[float]] | None  # by group; None when the evaluator returns no per_example
    pca: dict[str, Any]  # {"checkpoints": [[x, y]...], "generated": [[x, y]...], "explained": [f1, f2]}
    diversity: dict[str, Any]  # see rpgen.evaluation.memorization.diversity
    summary: dict[str, Summary]  # by group
    nonfinite_generated: list[str] = field(default_factory=list)  # generated files with NaN/inf weights
    against_noise: dict[str, Any] | None = None  # see rpgen.evaluation.verdict.against_noise; None without baselines
    verdict: str = ""
    plots: list[str] = field(default_factory=list)  # PNG file names written beside results.json

    def to_dict(self) -> dict[str, Any]:
        """The content of ``results.json``. ``iou`` appears only when measured and
        ``nonfinite_generated`` only when some generated model has NaN/inf weights."""
        data: dict[str, Any] = {
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "evaluator": self.evaluator,
            "checkpoints": self.checkpoints,
            "generated": self.generated,
            "baselines": self.baselines,
            "checkpoint_files": self.checkpoint_files,
            "generated_files": self.generated_files,
            "checkpoint_metrics": self.checkpoint_metrics,
            "generated_metrics": self.generated_metrics,
            "novelty": self.novelty,
            "novelty_unit": self.novelty_unit,
            "nearest_checkpoint": self.nearest_checkpoint,
        }
        if self.iou is not None:
            data["iou"] = self.iou
        data["pca"] = self.pca
        data["diversity"] = self.diversity
        if self.nonfinite_generated:
            data["nonfinite_generated"] = self.nonfinite_generated
        data["summary"] = {group: dataclasses.asdict(summary) for group, summary in self.summary.items()}
        if self.against_noise is not None:
            data["against_noise"] = self.against_noise
        data["verdict"] = self.verdict
        data["plots"] = self.plots
        return _json_safe(data)

    def to_json(self) -> str:
        """``results.json`` as text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"


def _json_safe(value: Any) -> Any:
    """NaN/Inf become null so results.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value
