"""A zoo of several training runs of a tiny ViT (examples/tiny_vit/model.py) on the digits.

Each seed trains from scratch (Adam, 600 minibatch steps), then saves one plain safetensors
state_dict per epoch of low-learning-rate training. The file names say nothing of the runs
(``a00.safetensors``, ...): rpgen finds them from the weights.

    python examples/tiny_vit/make_checkpoints.py OUT_DIR [--seeds 4] [--per-seed 5]
    rpgen train OUT_DIR --out RUN_DIR
    rpgen evaluate RUN_DIR --generated GEN_DIR --evaluator examples/tiny_vit/evaluator.py:evaluate
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.nn import functional as F


def _model_module():
    spec = importlib.util.spec_from_file_location("tiny_vit_model", Path(__file__).with_name("model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_checkpoints(out_dir: Path, *, seeds: int, per_seed: int) -> list[Path]:
    vit = _model_module()
    x_train, _, y_train, _ = vit.split()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = vit.TinyViT()
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(600):
            batch = torch.randint(len(x_train), (128,))
            loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
        for epoch in range(per_seed):
            for batch in torch.randperm(len(x_train)).split(128):
                loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            path = out_dir / f"{'abcdefghijklmnopqrstuvwxyz'[seed]}{epoch:02d}.safetensors"
            save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, path)
            paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seeds", type=int, default=4, help="independent training runs")
    parser.add_argument("--per-seed", type=int, default=5, help="checkpoints (epochs) saved per run")
    args = parser.parse_args()
    paths = make_checkpoints(args.out_dir, seeds=args.seeds, per_seed=args.per_seed)
    print(f"wrote {len(paths)} checkpoints to {args.out_dir}")


if __name__ == "__main__":
    main()
