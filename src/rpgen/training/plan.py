"""What ``rpgen train`` tells a person before its first step: the zoo it found, what it chose and
why, what it will cost in memory, when it will stop, and how to make it cheaper."""

from __future__ import annotations

from rpgen.config import Config
from rpgen.data.lineage import Lineage
from rpgen.data.tokenizer import Layout
from rpgen.safety.resources import size_text


def plan_lines(config: Config, layout: Layout, *, num_checkpoints: int, lineage: Lineage, sizing: dict | None,
               memory: int | None, resume: bool) -> list[str]:
    """The plan, one short line each (printed above the progress bar; ``sizing`` as run.json records it)."""
    runs = lineage.num_runs
    lines = [f"{'resuming' if resume else 'training'}: {num_checkpoints} checkpoints of {layout.num_params:,} "
             f"parameters ({layout.num_tokens:,} tokens of {layout.token_size} values), {runs} training "
             f"run{'' if runs == 1 else 's'} ({lineage.source})"]
    m, tc = config.model, config.train
    lines.append(f"generator: {m.method}, {m.backbone} backbone of width {m.d_model} x {m.num_layers} layers, "
                 f"tokens centred per {config.data.center}; {tc.steps:,} steps of {tc.batch_size} checkpoints"
                 + ("" if memory is None else f"; about {size_text(memory)} of RAM"))
    lines += [f"  chosen: {reason}" for reason in (sizing or {}).get("chosen", [])]
    if tc.evaluator:
        lines.append(f"stops early: once generated models score like the checkpoints ({tc.evaluator})")
    elif tc.stop_on_plateau:
        lines.append("stops early: in the schedule's second half, once the loss stops falling "
                     "(--evaluator SPEC stops once generated models score like the checkpoints)")
    lines.append("cheaper: fewer steps (--set train.steps=N), fewer and longer tokens "
                 "(--set data.token_size=N), a narrower backbone (--set model.d_model=N)")
    return lines
