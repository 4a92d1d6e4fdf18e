"""rpgen.training.plan: the block rpgen train prints before its first step."""

import torch

from rpgen.config import Config, apply_overrides
from rpgen.data.lineage import Lineage
from rpgen.data.tokenizer import fit_layout
from rpgen.training.plan import plan_lines


def test_the_plan_names_the_zoo_the_choices_the_cost_and_the_stop():
    layout = fit_layout([{"w": torch.randn(10, 20)}, {"w": torch.randn(10, 20)}], token_size=64)
    config = apply_overrides(Config(), ["model.d_model=64", "train.steps=500", "data.center=element"])
    sizing = {"chosen": ["train.steps = 500 for 1 distinct model(s) (1 run(s))"]}
    lines = plan_lines(config, layout, num_checkpoints=2, lineage=Lineage((0, 0), "runs.json"), sizing=sizing,
                       memory=2_500_000_000, resume=False)
    assert lines[0] == "training: 2 checkpoints of 200 parameters (4 tokens of 64 values), 1 training run (runs.json)"
    assert "width 64" in lines[1] and "500 steps" in lines[1] and "about 2.5 GB of RAM" in lines[1]
    assert lines[2] == "  chosen: train.steps = 500 for 1 distinct model(s) (1 run(s))"
    assert lines[3].startswith("stops early: in the schedule's second half") and lines[4].startswith("cheaper:")
    evaluated = apply_overrides(config, ["train.evaluator=m:f", "train.stop_on_plateau=false"])
    lines = plan_lines(evaluated, layout, num_checkpoints=2, lineage=Lineage((0, 1), "runs.json"), sizing=None,
                       memory=None, resume=True)
    assert lines[0].startswith("resuming: ") and "2 training runs" in lines[0] and "RAM" not in lines[1]
    assert lines[2] == "stops early: once generated models score like the checkpoints (m:f)"
