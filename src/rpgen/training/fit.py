"""The fit loop every method trains through: AdamW with warm-up + cosine, clipping, EMA, logs to
``metrics.jsonl``, resumable states, early stops and the stop at the first non-finite loss.

It runs the same on one CPU, one GPU (bf16 autocast) or several processes under
``accelerate launch``; only the main process writes files.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch

import rpgen.run_dir as runfiles
import rpgen.training.stopping as stopping
from rpgen.errors import RpgenError
from rpgen.methods import Stage
from rpgen.safety.atomic import append_line
from rpgen.training.state import load_state, save_state, state_path


def lr_factor(step: int, *, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class FitLoop:
    """Runs one :class:`~rpgen.methods.Stage` after another: AdamW with warm-up + cosine,
    clipping, EMA, logging to metrics.jsonl, resumable states and early stops."""

    def __init__(self, accelerator, run_dir: Path, tc, *, resume: bool, stop_after: int | None,
                 stopper: stopping.Stopper | None = None, run_of: Callable | None = None) -> None:
        self.accelerator = accelerator
        self.run_dir = run_dir
        self.tc = tc
        self.resume = resume
        self.stop_after = stop_after
        self.stopper = stopper  # the main process's, when training evaluates (train.evaluator)
        self.run_of = run_of  # module -> a Run that samples with it
        self.evaluates = bool(tc.evaluator)
        self.plateau: stopping.LossPlateau | None = None  # the loss rule, without an evaluator
        self.stopped: tuple[int, str] | None = None  # (step, why) when a stop rule ended training
        self.last_step = 0
        # a resumed run's times go on from the earlier sessions' (metrics.jsonl, run.json, the CLI)
        self.start = time.perf_counter() - (runfiles.RunDir(run_dir).elapsed_s() if resume else 0.0)
        self._ema: list[tuple[str, torch.Tensor]] = []  # (name in its stage's module, EMA value)
        self._ema_module: torch.nn.Module | None = None  # the module of the stage that kept an EMA

    def fit(self, stage: Stage, *, rng: torch.Generator, bar, interrupted: Callable[[], bool]) -> bool:
        """Train ``stage``; False when it stopped early (interrupt aside, which raises) with a saved state."""
        accelerator, tc = self.accelerator, self.tc
        main = accelerator.is_main_process
        module = stage.module
        module.train()
        optimizer = torch.optim.AdamW(module.parameters(), lr=stage.lr, weight_decay=tc.weight_decay)
        ema = [p.detach().clone() for p in module.parameters()] if stage.ema_decay > 0 else None
        step = 0
        if stage.resumable and self.resume:
            path = state_path(self.run_dir)
            if path is None:
                raise RpgenError(f"cannot resume: {self.run_dir} has no saved training state yet; start it again")
            step = load_state(path, module, optimizer, ema, rng, process_index=accelerator.process_index)
        if stage.resumable:
            prepared, optimizer = accelerator.prepare(module, optimizer)
        else:
            prepared = module

        def save() -> None:
            if main:
                save_state(self.run_dir / runfiles.STATE, accelerator.unwrap_model(prepared), optimizer,
                                    ema, rng, step)
            accelerator.wait_for_everyone()

        last = stage.steps if self.stop_after is None else min(stage.steps, step + self.stop_after)
        task = bar.add_task(stage.title, total=stage.steps, completed=step, loss=float("nan"))
        if stage.resumable and tc.stop_on_plateau and not self.evaluates:
            self.plateau = stopping.LossPlateau(stage.steps, [
                (s, v) for s, v in stopping.read_losses(self.run_dir / runfiles.METRICS) if s <= step]
                if self.resume else [])
        running, since_log = 0.0, 0
        while step < last:
            if interrupted():
                if stage.resumable:
                    save()
                raise KeyboardInterrupt
            for group in optimizer.param_groups:
                group["lr"] = stage.lr * lr_factor(step, warmup=tc.warmup_steps, total=stage.steps)
            with accelerator.autocast():
                loss = stage.loss(prepared)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            norm = accelerator.clip_grad_norm_(prepared.parameters(), tc.grad_clip) if tc.grad_clip > 0 else None
            value = loss.item()
            _check_finite(stage, step + 1, value, norm, lr=optimizer.param_groups[0]["lr"])
            optimizer.step()
            if ema is not None:
                with torch.no_grad():
                    for e, p in zip(ema, module.parameters()):
                        e.lerp_(p.detach(), 1 - stage.ema_decay)
            step += 1
            running += value
            since_log += 1
            if step % tc.log_every == 0 or step == stage.steps:
                bar.update(task, loss=running / since_log)
                if main:
                    self._log(stage, step, running / since_log, optimizer.param_groups[0]["lr"])
                if self.plateau is not None:
                    self.plateau.add(step, running / since_log)
                running, since_log = 0.0, 0
            bar.update(task, completed=step)
            if self.plateau is not None and step % self.plateau.window == 0 and self._agree(
                    self.plateau.should_stop(step)):
                self.stopped = (step, self.plateau.reason(step))
                break
            if stage.resumable and step % tc.save_every == 0 and step < stage.steps:
                save()
            if stage.resumable and self.evaluates and self._evaluate(stage, step, module, ema, bar, save):
                break
        self.last_step = step
        if stage.resumable:
            save()
        if ema is not None:
            names = {id(p): n for n, p in module.named_parameters()}
            self._ema += [(names[id(p)], e) for p, e in zip(module.parameters(), ema)]
            self._ema_module = module
        return step >= stage.steps or self.stopped is not None

    def _evaluate(self, stage: Stage, step: int, module: torch.nn.Module, ema, bar, save: Callable[[], None]) -> bool:
        """Score the generator when an evaluation is due (main process); True when training should
        stop (every process learns it). An evaluator that fails saves a resumable state first."""
        every = self.tc.eval_every or stopping.auto_eval_every(stage.steps)
        if not (step % every == 0 or step == stage.steps):
            return False
        stop = None
        if self.stopper is not None:
            try:
                with stopping.evaluating(module, ema) as m:
                    record = self.stopper.evaluate(self.run_of(m), step)
            except RpgenError:
                save()
                raise
            stopping.log_evaluation(self.run_dir / runfiles.METRICS, stage.name, record,
                                    time.perf_counter() - self.start)
            if not bar.disable:
                bar.console.print(f"step {step}: generated {record['metric']} {record['generated_mean']:.4g} "
                                  f"(min {record['generated_min']:.4g}), checkpoints {record['checkpoints_mean']:.4g}")
            stop = self.stopper.reason() if self.stopper.should_stop() and step < stage.steps else None
        stop = self._agree(stop)
        if stop is None:
            return False
        self.stopped = (step, stop)
        return True

    def _agree(self, decision):
        """The main process's ``decision``, on every process (each sees its own losses)."""
        if self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            decision = broadcast_object_list([decision])[0]
        return decision

    def stop_record(self, *, total: int) -> dict:
        """Why training ended, for run.json."""
        record = {"step": self.last_step, "steps": total, "train_s": round(time.perf_counter() - self.start, 1)}
        if self.stopped is not None:
            record["reason"] = f"stopped at step {self.stopped[0]} of {total}: {self.stopped[1]}"
        else:
            record["reason"] = f"the schedule ended (step {total})"
        if self.stopper is not None and self.stopper.best is not None:
            best = self.stopper.best
            record.update(best_step=best["step"], best_generated_mean=best["generated_mean"],
                          checkpoints_mean=best["checkpoints_mean"], metric=best["metric"])
            record["reason"] += f"; kept the generator of step {best['step']}, the best evaluated"
        return record

    def ema_weights(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The EMA values of the trained stages, under their names in ``model``'s state_dict."""
        if not self._ema:
            return {}
        prefix = next(name for name, m in model.named_modules() if m is self._ema_module)
        prefix = f"{prefix}." if prefix else ""
        return {prefix + n: e.detach().cpu().contiguous() for n, e in self._ema}

    def _log(self, stage: Stage, step: int, loss: float, lr: float) -> None:
        append_line(self.run_dir / runfiles.METRICS, json.dumps({
            "stage": stage.name, "step": step, "loss": loss, "lr": lr,
            "elapsed_s": round(time.perf_counter() - self.start, 3)}))


def _check_finite(stage: Stage, step: int, loss: float, norm: torch.Tensor | None, *, lr: float) -> None:
    """Stop at the first non-finite loss or gradient norm: what follows would be garbage."""
    what = None
    if not math.isfinite(loss):
        what = f"loss is {loss}"
    elif norm is not None and not bool(torch.isfinite(norm)):
        what = f"gradient norm is {float(norm)}"
    if what is not None:
        raise RpgenError(f"training diverged at {stage.title} step {step}: {what} (learning rate {lr:.3g}); "
                         "lower train.lr or raise train.warmup_steps")


@contextmanager
def deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """Turn the first Ctrl-C into a flag checked between steps; the second one stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    caught = []

    def handler(signum, frame):
        if caught:
            raise KeyboardInterrupt
        caught.append(signum)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(caught)
    finally:
        signal.signal(signal.SIGINT, previous)
