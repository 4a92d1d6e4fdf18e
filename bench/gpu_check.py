"""GPU check and paper-scale benchmark, for a CUDA machine (about 5 minutes on one H100).

    pip install torch==2.13.0 && pip install -e ".[dev,cuda]"   # mamba-ssm + causal-conv1d
    python bench/gpu_check.py [--params 86M] [--checkpoints 4] [--steps 10] [--work /tmp/rpgen-gpu]

1. The CUDA Mamba kernels (mamba-ssm) and rpgen's pure-PyTorch Mamba, given the same weights
   (identical parameter names), agree on outputs and gradients (fp32).
2. The ``paper-vit-b`` preset (token 8192, d_model 8192, CUDA kernels, bf16) on a ViT-B-size
   (~86M parameters) WideMLP zoo: seconds per training step and peak GPU memory, then one model
   generated with DDIM-60: seconds and peak GPU memory.

Writes bench/results/gpu.json (the machine includes the card's name) and bench/results/gpu.md. Not run on the
2-core CPU machine; no numbers are claimed until this script has produced them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
from common import Report, Table, write_results


def mamba_agreement() -> dict:
    from mamba_ssm import Mamba as CudaMamba

    from rpgen.models.mamba import Mamba

    torch.manual_seed(0)
    d_model, d_state = 256, 16
    cuda = CudaMamba(d_model, d_state=d_state, d_conv=4, expand=2).cuda()
    ref = Mamba(d_model, d_state=d_state, d_conv=4, expand=2).cuda()
    missing = ref.load_state_dict(cuda.state_dict(), strict=True)
    x = torch.randn(2, 1024, d_model, device="cuda", requires_grad=True)
    y_cuda = cuda(x)
    y_cuda.square().mean().backward()
    g_cuda = x.grad.clone()
    x.grad = None
    y_ref = ref(x)
    y_ref.square().mean().backward()
    out_err = ((y_cuda - y_ref).abs().max() / y_ref.abs().max()).item()
    grad_err = ((g_cuda - x.grad).abs().max() / x.grad.abs().max()).item()
    ok = out_err < 1e-3 and grad_err < 1e-3
    return {"same_parameter_names": str(missing) == "<All keys matched successfully>",
            "max_rel_output_diff": out_err, "max_rel_grad_diff": grad_err, "agree": ok}


def paper_scale(params: int, *, checkpoints: int, steps: int, work: Path) -> dict:
    from rpgen.config import apply_overrides, preset
    from rpgen.generation import generate
    from rpgen.training import train
    from wide_mlp import collect_wide_mlp

    shutil.rmtree(work, ignore_errors=True)
    collect_wide_mlp(work / "zoo", params=params, num_checkpoints=checkpoints)
    config = apply_overrides(preset("paper-vit-b"), [f"train.steps={steps}", "train.log_every=1",
                                                     "train.warmup_steps=1", f"train.save_every={steps}"])
    torch.cuda.reset_peak_memory_stats()
    train(work / "zoo", work / "run", config, progress=False)
    train_mem = torch.cuda.max_memory_allocated()
    elapsed = [json.loads(line)["elapsed_s"] for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    step_s = statistics.median(b - a for a, b in zip(elapsed, elapsed[1:]))
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    start = time.perf_counter()
    generate(work / "run", work / "gen", num=1, sampler="ddim", steps=60, progress=False, device="cuda")
    torch.cuda.synchronize()
    gen_s = time.perf_counter() - start
    info = json.loads((work / "run" / "run.json").read_text())
    shutil.rmtree(work, ignore_errors=True)
    return {"preset": "paper-vit-b", "params": info["generated_params"], "tokens": info["num_tokens"],
            "checkpoints": checkpoints, "train_step_s": round(step_s, 3),
            "train_peak_gpu_gb": round(train_mem / 1e9, 2), "generate_ddim60_s": round(gen_s, 1),
            "generate_peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="86M")
    parser.add_argument("--checkpoints", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--work", type=Path, default=Path("/tmp/rpgen-gpu"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/gpu_check.py needs a CUDA GPU")
    params = int(float(args.params.rstrip("M")) * 1e6)
    result = {"mamba": mamba_agreement()}
    print(json.dumps(result["mamba"]), flush=True)
    result["paper_scale"] = paper_scale(params, checkpoints=args.checkpoints, steps=args.steps, work=args.work)
    print(json.dumps(result["paper_scale"]), flush=True)
    print(write_results("gpu", result, render))
    if not result["mamba"]["agree"]:
        sys.exit("CUDA and pure-PyTorch Mamba disagree")


def render(data: dict) -> Report:
    m, p = data["mamba"], data["paper_scale"]
    return Report(
        title="GPU check",
        table=Table(["check", "result"], [
            ["CUDA vs pure-PyTorch Mamba, same weights: max relative difference (outputs / input gradients)",
             f"{m['max_rel_output_diff']:.2e} / {m['max_rel_grad_diff']:.2e}: {'agree' if m['agree'] else 'DISAGREE'}"],
            [f"{p['preset']} preset, {p['params']:,} generated parameters ({p['tokens']:,} tokens), "
             f"{p['checkpoints']} checkpoints: training step",
             f"{p['train_step_s']} s, peak {p['train_peak_gpu_gb']} GB"],
            ["one model with DDIM-60", f"{p['generate_ddim60_s']} s, peak {p['generate_peak_gpu_gb']} GB"],
        ], "ll"),
    )

if __name__ == "__main__":
    main()
