"""Training that evaluates its generated models (rpgen.training.stopping): logs, the stop rule, the best
generator kept, run.json's reason, and evaluators that fail."""

from __future__ import annotations

import json

from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import check_one_line_error, rpgen, set_args, tiny
from rpgen.training.stopping import Reference, Stopper, auto_eval_every

EVALUATOR = "rpgen.zoo.digits:evaluate"


def evals(run) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["eval"] for r in rows if "eval" in r]


def test_training_with_an_evaluator_logs_scores_and_keeps_the_best_generator(digits_zoo, tmp_path):
    run = tmp_path / "run"
    result = rpgen("train", digits_zoo, "--out", run, "--no-progress", "--evaluator", EVALUATOR,
                   *set_args(tiny("train.steps=12", "train.eval_every=4", "train.eval_models=2",
                                  "train.stop_tolerance=0")))
    assert result.exit_code == 0, result.output
    logged = evals(run)
    assert [e["step"] for e in logged] == [4, 8, 12]  # tolerance 0: the checkpoints are never reached here
    for e in logged:
        assert len(e["generated"]) == 2 and e["metric"] == "accuracy" and 0 <= e["generated_mean"] <= 100
        assert e["checkpoints_mean"] > 90
    best = max(logged, key=lambda e: e["generated_mean"])
    stopped = json.loads((run / "run.json").read_text())["stopped"]
    assert stopped["best_step"] == best["step"] and stopped["step"] == 12
    assert stopped["reason"].startswith("the schedule ended")
    assert not (run / "best.safetensors").exists()
    # the generator written is the best one evaluated: generating with it gives the logged scores
    gen = tmp_path / "gen"
    assert rpgen("generate", run, "--num", 2, "--out", gen, "--no-progress").exit_code == 0
    from rpgen.zoo.digits import evaluate

    scores = [evaluate(load_file(gen / f"{i:04d}.safetensors"))["accuracy"] for i in range(2)]
    assert scores == pytest.approx(best["generated"])
    assert (run / "loss.png").stat().st_size > 0


def test_training_stops_once_two_evaluations_reach_the_checkpoints(digits_zoo, tmp_path):
    run = tmp_path / "run"
    # a tolerance of 100 points: every evaluation counts as reached, so the second one stops training
    result = rpgen("train", digits_zoo, "--out", run, "--no-progress", "--evaluator", EVALUATOR,
                   *set_args(tiny("train.steps=40", "train.eval_every=5", "train.eval_models=1",
                                  "train.stop_tolerance=100")))
    assert result.exit_code == 0, result.output
    assert [e["step"] for e in evals(run)] == [5, 10]
    stopped = json.loads((run / "run.json").read_text())["stopped"]
    assert stopped["step"] == 10 and stopped["reason"].startswith("stopped at step 10 of 40")
    assert (run / "generator.safetensors").is_file()


@pytest.mark.parametrize("kind", ["raises", "nan"])
def test_an_evaluator_that_fails_during_training_is_one_line_and_the_run_resumes(digits_zoo, tmp_path, kind):
    src = tmp_path / "evaluator.py"
    body = "raise ValueError('broken on purpose')" if kind == "raises" else "return {'accuracy': float('nan')}"
    src.write_text("CALLS = []\n\ndef evaluate(state_dict):\n    CALLS.append(1)\n"
                   "    if len(CALLS) <= 5:\n        return {'accuracy': 90.0 + len(CALLS)}\n    " + body + "\n")
    run = tmp_path / "run"
    overrides = tiny("train.steps=12", "train.eval_every=6", "train.eval_models=1")
    result = rpgen("train", digits_zoo, "--out", run, "--no-progress", "--evaluator", f"{src}:evaluate",
                   *set_args(overrides))  # 5 checkpoints scored, then the first generated model fails
    check_one_line_error(result, "evaluator", "step 6")
    assert not (run / "generator.safetensors").exists()
    assert (run / "state" / "state.safetensors").is_file()
    resumed = rpgen("train", digits_zoo, "--out", run, "--resume", "--no-progress", *set_args(
        [o for o in overrides if o.startswith("train.")] + ["train.evaluator=''"]))
    assert resumed.exit_code == 0, resumed.output
    assert (run / "generator.safetensors").is_file()


def test_a_conditional_run_refuses_an_evaluator(tasks_zoo, tmp_path):
    result = rpgen("train", tasks_zoo / "train", "--out", tmp_path / "run", "--no-progress",
                   "--evaluator", EVALUATOR, *set_args(tiny()))
    check_one_line_error(result, "train.evaluator", "unconditional")


def test_the_stop_rule_and_its_defaults():
    assert auto_eval_every(2000) == 200 and auto_eval_every(300) == 100
    ref = Reference("accuracy", [98.0, 98.5, 99.0], tolerance=0.5)
    assert ref.reached(98.0) and not ref.reached(97.9)
    loss = Reference("val_loss", [1.0, 1.2], tolerance=0.1)
    assert loss.reached(1.2) and not loss.reached(1.25)
    stopper = Stopper("x:y", every=10, models=2, seed=0, reference=ref, run_dir=Path("unused"))
    stopper.history = [{"reached": True}, {"reached": False}, {"reached": True}]
    assert not stopper.should_stop()
    stopper.history.append({"reached": True})
    assert stopper.should_stop()


def test_the_loss_plateau_rule_waits_for_the_second_half_and_two_flat_windows():
    from rpgen.training.stopping import LossPlateau

    falling = LossPlateau(2000, [(s, 1.0 / s) for s in range(25, 2001, 25)])
    assert not any(falling.should_stop(s) for s in range(200, 2001, 200))
    flat = LossPlateau(2000, [(s, 1.0 if s <= 800 else 0.5) for s in range(25, 2001, 25)])
    assert falling.window == 200
    stops = [s for s in range(200, 2001, 200) if flat.should_stop(s)]
    assert stops == [1400, 1600, 1800]  # after 1,000 + 2 windows, once two windows stopped falling
    short = LossPlateau(300, [(s, 1.0) for s in range(5, 301, 5)])
    assert not any(short.should_stop(s) for s in range(1, 301))


def test_a_run_that_stops_on_a_plateau_says_so(digits_zoo, tmp_path):
    run = tmp_path / "run"
    # a learning rate of 1e-12: the loss cannot fall, so the rule ends the run at step 300 of 400
    result = rpgen("train", digits_zoo, "--out", run, "--no-progress",
                   *set_args(tiny("train.steps=400", "train.lr=1e-12", "train.log_every=20", "train.save_every=100")))
    assert result.exit_code == 0, result.output
    stopped = json.loads((run / "run.json").read_text())["stopped"]
    assert stopped["step"] == 300 and "loss stopped falling" in stopped["reason"]
