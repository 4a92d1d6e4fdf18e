"""Shared by the benchmark scripts (run as ``python bench/NAME.py``, so this folder is importable): the
results writer, the machine and command line, child processes timed and measured, and small
helpers of the digits-tasks benchmarks. No script imports another script; they import this module
and the two zoo fixtures (``wide_mlp.py``, ``diverse_mlp.py``).

Every results file goes through :func:`write_results`: ``bench/results/NAME.json`` (the numbers,
the machine and the command line, with no absolute machine paths) and ``bench/results/NAME.md``
rendered from that JSON by the script's ``render(data) -> Report``: a title, the command and
machine, an intro, one table and optional further sections, all computed from the numbers. So
every report can be rebuilt from its JSON alone::

    python bench/common.py quickstart sampling ...           # rewrite bench/results/NAME.{json,md} from NAME.json
    python bench/common.py --check quickstart sampling ...   # exit 1 if a NAME.md is not what NAME.json renders to
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import rpgen

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SRC = Path(rpgen.__file__).resolve().parents[1]  # child processes run the same rpgen as this one
# An absolute path of two or more components (/tmp/x, /home/me/runs/a), not a ratio like P/64 or "a / b".
ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])/(?:[\w.+-]+/)+[\w.+-]*")


def peak_rss_gb() -> float:
    """This process's peak resident set size so far (VmHWM), in GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e9
    raise RuntimeError("no VmHWM in /proc/self/status")  # pragma: no cover


def run_worker(script: str, spec: dict, *, max_rss_gb: float, timeout_s: float, poll_s: float = 0.2,
               env: dict[str, str] | None = None) -> dict:
    """Run ``python SCRIPT worker SPEC`` in a fresh process (environment ``env``, else this one's) and
    return the JSON of its last output line; kill it above ``max_rss_gb`` of resident memory or after
    ``timeout_s``: then ``{"failed": why, ...}``."""
    proc = subprocess.Popen([sys.executable, script, "worker", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    start, peak = time.perf_counter(), 0.0
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    peak = max(peak, int(line.split()[1]) * 1024 / 1e9)
        except OSError:
            pass
        if peak > max_rss_gb or time.perf_counter() - start > timeout_s:
            proc.kill()
            proc.wait()
            why = f"over {max_rss_gb} GB" if peak > max_rss_gb else f"over {timeout_s:.0f} s"
            return {"failed": why, "seen_rss_gb": round(peak, 2)}
        time.sleep(poll_s)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        return {"failed": f"exit {proc.returncode}: {stderr.strip().splitlines()[-1] if stderr.strip() else ''}"}
    return json.loads(stdout.strip().splitlines()[-1])


def child(argv: list[str], log: Path) -> tuple[float, float]:
    """Run ``argv`` (one torch thread, cwd = the repository); return its wall seconds and peak RSS (GB)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage: ru_maxrss in KB
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise SystemExit(f"{' '.join(map(str, argv))} failed (exit {proc.returncode}; log {log}):\n{tail}")
    return time.perf_counter() - start, usage.ru_maxrss * 1024 / 1e9


def cli(*args: object) -> list[str]:
    """The ``rpgen`` command line with ``args``, for :func:`child`."""
    return [sys.executable, "-m", "rpgen.cli", *map(str, args), "--no-progress"]


def machine() -> dict:
    """What the numbers were measured on: CPU model, cores, torch threads, versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def portable_path(path: str | Path) -> str:
    """``path`` without this machine's layout: relative to the rpgen checkout that holds it, else only its name."""
    path = Path(path).resolve() if not Path(path).is_absolute() else Path(path)
    for parent in path.parents:
        if parent == REPO or ((parent / "src" / "rpgen").is_dir() and (parent / "bench").is_dir()):
            return path.relative_to(parent).as_posix() or "."
    return f".../{path.name}"


def portable(value: Any) -> Any:
    """``value`` (JSON-like) with every absolute path in its strings replaced by :func:`portable_path`."""
    if isinstance(value, str):
        return ABSOLUTE_PATH.sub(lambda m: portable_path(m.group(0).rstrip("/")), value)
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v) for v in value]
    return value


def command_line(argv: Sequence[str] | None = None) -> str:
    """How this script was run, e.g. ``python bench/scale.py --sizes 1M`` (paths made portable)."""
    script, *args = sys.argv if argv is None else argv
    return portable(" ".join(["python", portable_path(script), *args]))


@dataclass(frozen=True)
class Table:
    """A Markdown table: ``align`` has one letter per column, ``l`` (text) or ``r`` (numbers)."""

    header: Sequence[str]
    rows: Sequence[Sequence[object]]
    align: str

    def __post_init__(self) -> None:
        if len(self.align) != len(self.header) or set(self.align) - {"l", "r"}:
            raise ValueError(f"align {self.align!r} needs one l/r per column of {list(self.header)}")
        for row in self.rows:
            if len(row) != len(self.header):
                raise ValueError(f"row {list(row)} has {len(row)} cells for {len(self.header)} columns")

    def markdown(self) -> str:
        def line(cells: Sequence[object]) -> str:
            return "| " + " | ".join(str(c) for c in cells) + " |"

        rule = "|" + "|".join("---" if a == "l" else "---:" for a in self.align) + "|"
        return "\n".join([line(self.header), rule, *map(line, self.rows)])


@dataclass(frozen=True)
class Report:
    """What a results Markdown file says, computed from its JSON data."""

    title: str
    table: Table
    intro: str = ""  # between the command/machine lines and the table
    sections: Sequence[str] = ()  # Markdown blocks after the table
    machine_note: str = ""  # appended to the machine line, e.g. "one torch thread per process"
    commands: Sequence[str] = ()  # several command lines (the JSON's "command" when empty)


def machine_line(info: dict, note: str = "") -> str:
    threads = info.get("torch_threads", "?")
    line = (f"Machine: {info.get('cpu', '?')}, {info.get('cores', '?')} cores, {threads} torch "
            f"thread{'' if threads == 1 else 's'}, Python {info.get('python', '?')}, torch {info.get('torch', '?')}")
    if info.get("gpu"):
        line += f", GPU {info['gpu']}"
    return line + (f" ({note})" if note else "") + "."


def markdown(report: Report, data: dict) -> str:
    commands = report.commands or [data["command"]]
    lines = [f"# {report.title}", "",
             ("Command: " if len(commands) == 1 else "Commands: ") + ", ".join(f"`{c}`" for c in commands) + "  ",
             machine_line(data["machine"], report.machine_note), ""]
    if report.intro:
        lines += [report.intro, ""]
    lines += [report.table.markdown(), ""]
    for section in report.sections:
        lines += [section, ""]
    return "\n".join(lines)


def write_results(name: str, data: dict, render: Callable[[dict], Report], *, results: Path = RESULTS) -> str:
    """Write ``results/NAME.json`` and ``results/NAME.md`` (rendered from it); return the Markdown.

    ``data`` gets ``command`` (this process's command line unless given) and ``machine`` (this
    machine unless given) first; absolute paths in its strings are made portable. The Markdown is
    rendered before anything is written, so a rendering error leaves the old files in place.
    """
    data = portable({"command": data.get("command") or command_line(), "machine": data.get("machine") or machine(),
                     **{k: v for k, v in data.items() if k not in ("command", "machine")}})
    text = markdown(render(data), data)
    for kind, content in (("JSON", json.dumps(data)), ("Markdown", text)):
        if found := ABSOLUTE_PATH.search(content):
            raise ValueError(f"{name}: the {kind} report would hold the machine path {found.group(0)!r}")
    # imported here, not above: step_time.py runs its workers on an earlier revision of rpgen too
    from rpgen.safety.atomic import write_text_atomic

    results.mkdir(parents=True, exist_ok=True)
    write_text_atomic(results / f"{name}.json", json.dumps(data, indent=1) + "\n")
    write_text_atomic(results / f"{name}.md", text)
    return text


def rewrite(name: str, render: Callable[[dict], Report], *, results: Path = RESULTS) -> str:
    """Rebuild ``results/NAME.md`` (and the portable JSON) from ``results/NAME.json`` alone."""
    data = json.loads((results / f"{name}.json").read_text(encoding="utf-8"))
    return write_results(name, data, render, results=results)


def hamming(a: str, b: str) -> int:
    """How many characters two task codes differ in."""
    return sum(x != y for x, y in zip(a, b))


def nearest_codes(code: str, codes: Sequence[str]) -> list[str]:
    """The codes among ``codes`` (``code`` itself left out) at the smallest Hamming distance from it:
    the "nearest seen task" baseline of the digits-tasks benchmarks (ties all count)."""
    others = [c for c in codes if c != code]
    best = min(hamming(code, c) for c in others)
    return [c for c in others if hamming(code, c) == best]


def flat(state: dict[str, torch.Tensor]) -> torch.Tensor:
    """A state dict as one vector, tensors in key order."""
    return torch.cat([state[k].reshape(-1) for k in sorted(state)])


def spread_ratio(generated: Sequence[dict[str, torch.Tensor]], trained: Sequence[dict[str, torch.Tensor]]) -> float:
    """Mean pairwise distance between ``generated`` models over that between ``trained`` ones (1: as
    diverse as those checkpoints; 0: copies of one model)."""
    def mean_distance(models: Sequence[dict[str, torch.Tensor]]) -> torch.Tensor:
        return torch.pdist(torch.stack([flat(m) for m in models])).mean()

    return float(mean_distance(generated) / mean_distance(trained))


RENDERERS = {"peers": ("peers_report", "render"), "peers_memory": ("peers_report", "render_memory"),
             "scale_scan": ("scale", "render"),
             "unseen_multimodal_sampling": ("unseen_multimodal", "render"),
             "unseen_multimodal_default": ("unseen_multimodal", "render"),
             "unseen_multimodal_sized": ("unseen_multimodal", "render"),
             "time_to_quality_tensor": ("time_to_quality", "render")}
"""Results whose renderer is not ``render`` in the script of the same name: NAME -> (module, function)."""


def main(argv: Sequence[str]) -> int:
    """``NAME ...``: rewrite each results file from its JSON; ``--check NAME ...``: only compare (exit 1 if
    any differs)."""
    check = bool(argv) and argv[0] == "--check"
    stale = []
    for name in argv[1:] if check else argv:
        module, function = RENDERERS.get(name, (name, "render"))
        render = getattr(importlib.import_module(module), function)
        if check:
            data = portable(json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8")))
            if markdown(render(data), data) != (RESULTS / f"{name}.md").read_text(encoding="utf-8"):
                stale.append(name)
        else:
            rewrite(name, render)
            print(f"wrote {RESULTS / name}.md")
    if stale:
        print(f"not what their JSON renders to: {', '.join(f'bench/results/{n}.md' for n in stale)}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
