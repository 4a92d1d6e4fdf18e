"""A conditional zoo: 1,022 binary tasks on the digits, one small classifier head per task.

This mirrors the paper's section 5 ("RPG's potential in unseen tasks": binary CIFAR-10 tasks with
a ViT-Tiny) on data that ships with scikit-learn.

- **Task.** A 10-bit code ``b`` (a string of ``0``/``1``; character ``i`` is the bit of digit
  class ``i``) asks "is this digit one of the classes whose bit is 1?". Every code except all-zeros
  and all-ones is a task: 1,022 tasks, numbered 1 to 1,022 by ``sum(2**i for the bits i that are 1)``.
- **Model.** A feature extractor (the :class:`~rpgen.zoo.digits.DigitsCNN` convolutions, trained
  once on the 10-class problem with a fixed seed, then frozen and shared) gives 32 standardised
  features; a task head ``Linear(32, 64) -> SiLU -> Linear(64, 2)`` (2,242 parameters, 36 tokens of
  64) answers the task. Only the head is generated.
- **Training.** Every head starts from the same initialisation and sees the same minibatches
  (only the labels differ), trains for ``HEAD_STEPS`` Adam steps on cached features, then keeps
  training at a small learning rate and is saved once per epoch (the paper's recipe): a few
  checkpoints per task. All heads of a chunk of tasks train at once as batched matmuls (einsum
  over a ``(tasks, ...)`` weight tensor); one CPU thread builds the whole zoo in well under a
  minute (see ``bench/results/unseen_tasks.md``).
- **Held-out tasks.** The 30 codes in :data:`HELDOUT` are never given to the generator.
- **Modes** (``modes`` > 1, ``rpgen collect digits-tasks --modes K``): every task is trained K times,
  from K different initialisations of the generated part (mode ``m`` starts from the same
  initialisation for every task), so each task has K different solutions with the units in different orders,
  and "mode m" means the same for every task. Heads alone do not make modes that differ: on the
  frozen features the midpoint of two modes of a held-out task scores 98.4% against 98.8%, the
  mean of three 97.9%, and a least-squares map from code to weights 96.6% (bench/unseen_multimodal.py
  measures it). So a multimodal zoo also trains the last conv block per task (:class:`TaskBlock`:
  a fresh 3x3 conv from the frozen second block's 16 maps to 8 channels, ReLU, average pool,
  Linear(8, 2); 1,178 parameters), where the mean of the three modes scores 74.0% and a linear
  map from code to weights 76.0% (bench/results/unseen_multimodal.md). With 16 channels the
  modes averaged better (84.7%, linear map 89.3%): too close to the trained 98.3% to show a
  10 pp difference, so the block has 8. Files are named
  ``rMM_CODE_K.safetensors``: the ``rNN_`` prefix tells ``rpgen train`` the mode is a training run,
  and the conditional generator then takes a state per mode beside the code (``data.states``).

Folder written by :func:`collect_digits_tasks` (``rpgen collect digits-tasks --out OUT``)::

    OUT/
      collect.json            the settings; written first, checked when an interrupted collect resumes
      extractor.safetensors   the frozen extractor (DigitsCNN weights + feature mean/std)
      train/                  CODE_K.safetensors (rMM_CODE_K with modes) for the 992 seen tasks
                              + conditions.json (file -> the code's bits)
      heldout/                the same for the 30 held-out tasks
      zoo.json                written last: tasks, test accuracy of every checkpoint, chance rates

``rpgen train OUT/train`` then trains a conditional generator (``train/conditions.json``). A
collect that is interrupted resumes where it stopped when run again with the same settings:
every head file is written atomically, chunks whose files all exist are skipped, and ``zoo.json``
marks the zoo complete.

**Evaluating a head.** Evaluators receive only a state dict, and a head's accuracy depends on the
task and on the zoo's extractor, so :func:`make_evaluator` builds the evaluator for one code and
one zoo folder. To use it with ``rpgen evaluate``, write a two-line file::

    from rpgen.zoo.digits_tasks import make_evaluator
    evaluate = make_evaluator("0101000011", zoo_dir="runs/tasks/zoo")

and pass ``--evaluator that_file.py:evaluate``. (A generated file records its condition in its
metadata; an evaluator written ``fn(state_dict, path)`` could read it from the file, but this one
is built for one task; the benchmark calls :func:`make_evaluator` per task.)

Shapes: T = tasks, N = examples, F = features (32), H = hidden units (64).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file

from rpgen.formats.checkpoints import load_state_dict, save_state_dict
from rpgen.data.conditions import CONDITIONS_FILE, write_conditions
from rpgen.errors import RpgenError
from rpgen.safety.atomic import write_text_atomic
from rpgen.safety.overwrite import check_replaceable, mark
from rpgen.display import progress_bar
from rpgen.zoo.digits import load_split, torch_threads
from rpgen.zoo.task_heads import (
    BLOCK_CHANNELS,
    BLOCK_LR,
    HEAD_STEPS,
    HIDDEN,
    NUM_CLASSES,
    TaskBlock,
    TaskHead,
    all_codes,
    check_code,
    code_bits,
    extract_features,
    extract_maps,
    forward_many,
    is_block,
    pretrain_extractor,
    task_labels,
    task_model,
    train_heads,
)

__all__ = [
    "HELDOUT", "NUM_CLASSES", "TaskBlock", "TaskHead", "all_codes", "batch_accuracy", "chance_rate", "check_code",
    "checkpoint_name", "checkpoint_path", "code_bits", "collect_digits_tasks", "extract_features", "extract_maps",
    "load_manifest", "make_evaluator", "task_labels", "task_model", "train_heads",
]  # the zoo's API: its tasks and models (from rpgen.zoo.task_heads), its files and its evaluator

NAME = "digits-tasks"
CHUNK_TASKS = 128  # heads trained together; results do not depend on it
FORMAT = 1

# 30 tasks the generator never sees: random.Random(5).sample(all codes, 30), sorted (1 to 7 bits set).
HELDOUT: tuple[str, ...] = (
    "0000000010", "0000111010", "0001111101", "0010001101", "0010111000", "0011001001", "0011100101",
    "0101111011", "0110000010", "0110000110", "0110001111", "0110110000", "0110111101", "0111100000",
    "0111101011", "0111111001", "1000010100", "1000011110", "1000110111", "1001011000", "1001100101",
    "1011010001", "1011101011", "1011101110", "1011111010", "1011111100", "1101100011", "1101100111",
    "1111010011", "1111100001",
)
COLLECT_INFO = "collect.json"
EXTRACTOR = "extractor.safetensors"
MANIFEST = "zoo.json"
TRAIN_DIR = "train"
HELDOUT_DIR = "heldout"


def checkpoint_name(code: str, index: int, mode: int | None = None) -> str:
    """``CODE_K.safetensors``, or ``rMM_CODE_K.safetensors`` in a zoo of several modes."""
    return f"{code}_{index}.safetensors" if mode is None else f"r{mode:02d}_{code}_{index}.safetensors"


def checkpoint_path(zoo_dir: str | Path, code: str, index: int, mode: int | None = None) -> Path:
    """Where a collected zoo keeps a task's checkpoint: ``train/`` or, for a held-out task, ``heldout/``."""
    return Path(zoo_dir) / (HELDOUT_DIR if code in HELDOUT else TRAIN_DIR) / checkpoint_name(code, index, mode)


def chance_rate(code: str) -> float:
    """Accuracy (%) of always answering the majority class of the test split."""
    _, _, _, y_test = load_split()
    positive = float(task_labels([code], y_test).float().mean())
    return 100.0 * max(positive, 1 - positive)


def make_evaluator(code: str, *, zoo_dir: str | Path) -> Callable[[dict[str, torch.Tensor]], dict[str, float]]:
    """The evaluator of task ``code``: state dict of a :class:`TaskHead` (or :class:`TaskBlock`)
    -> test accuracy (%)."""
    check_code(code)
    _extractor_of(zoo_dir)  # a folder that is not a zoo fails now, not at the first model

    def evaluate(state_dict: dict[str, torch.Tensor]) -> dict[str, float]:
        inputs, labels = _test_set_of(zoo_dir, block=is_block(state_dict))
        with torch.inference_mode():
            predicted = task_model(state_dict)(inputs).argmax(dim=1)
        return {"accuracy": 100.0 * float((predicted == task_labels([code], labels)[0]).float().mean())}

    return evaluate


def batch_accuracy(heads: Sequence[dict[str, torch.Tensor]], codes: Sequence[str], *,
                   zoo_dir: str | Path) -> list[float]:
    """Test accuracy (%) of each head (or block) on its own task, all at once."""
    inputs, labels = _test_set_of(zoo_dir, block=is_block(heads[0]))
    weights = {k: torch.stack([h[k] for h in heads]) for k in heads[0]}
    with torch.inference_mode():
        logits = forward_many(weights, inputs)  # (T, N, 2)
    correct = logits.argmax(-1) == task_labels(codes, labels)
    return (100.0 * correct.float().mean(1)).tolist()


def _test_set_of(zoo_dir: str | Path, *, block: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Test features (N, F), or maps (N, 16, 4, 4) with ``block``, through the zoo's extractor, and
    digit labels (N,); cached per file version."""
    path = _extractor_of(zoo_dir)
    return _test_set(str(path), path.stat().st_mtime_ns, block)


def _extractor_of(zoo_dir: str | Path) -> Path:
    path = Path(zoo_dir).resolve() / EXTRACTOR
    if not path.is_file():
        raise RpgenError(f"{zoo_dir} is not a digits-tasks zoo (no {EXTRACTOR}); build one with "
                         f"`rpgen collect digits-tasks --out DIR`")
    return path


@lru_cache(maxsize=4)
def _test_set(extractor_path: str, mtime_ns: int, block: bool) -> tuple[torch.Tensor, torch.Tensor]:
    _, _, x_test, y_test = load_split()
    extract = extract_maps if block else extract_features
    return extract(load_state_dict(extractor_path), x_test), y_test


def collect_digits_tasks(out_dir: str | Path, *, num_checkpoints: int = 3, seed: int = 0,
                         overwrite: bool = False, progress: bool = True,
                         codes: Sequence[str] | None = None, modes: int = 1) -> Path:
    """Build (or finish building) the digits-tasks zoo in ``out_dir``; return ``out_dir``.

    An existing complete zoo is refused unless ``overwrite``; an interrupted one with the same
    settings is resumed. Trains on one CPU thread, so the files do not depend on the core count.
    ``codes`` restricts the zoo to some tasks (small zoos for tests; a head does not depend on
    which other tasks are trained, up to float round-off): those in :data:`HELDOUT` still go to
    ``heldout/``. ``modes`` > 1 trains every task from that many initialisations (module docstring).
    """
    if num_checkpoints < 1:
        raise RpgenError(f"num_checkpoints must be at least 1 per task, got {num_checkpoints}")
    if not 1 <= modes <= 99:
        raise RpgenError(f"--modes must be between 1 and 99 (initialisations per task), got {modes}")
    out = Path(out_dir)
    settings = {"zoo": NAME, "format": FORMAT, "seed": seed, "num_checkpoints": num_checkpoints,
                "hidden": HIDDEN, "head_steps": HEAD_STEPS, "heldout": list(HELDOUT)}
    if modes > 1:
        settings.update(modes=modes, model="block", block_channels=BLOCK_CHANNELS, block_lr=BLOCK_LR)
        del settings["hidden"]
    mode_ids = [None] if modes == 1 else list(range(modes))  # None: the single-mode file names
    if codes is not None:
        codes = [check_code(c) for c in dict.fromkeys(codes)]
        settings["codes"] = codes
    else:
        codes = all_codes()
    _prepare(out, settings, overwrite=overwrite)
    x_train, y_train, _, _ = load_split()
    chunks = [codes[i:i + CHUNK_TASKS] for i in range(0, len(codes), CHUNK_TASKS)]
    heldout = set(HELDOUT)

    with torch_threads(1), progress_bar(enabled=progress, show_loss=False) as bar:
        task = bar.add_task(f"{NAME}: extractor", total=1 + len(codes))
        if (out / EXTRACTOR).is_file():
            extractor = load_state_dict(out / EXTRACTOR)
        else:
            extractor = pretrain_extractor(seed, x_train, y_train)
            save_state_dict(extractor, out / EXTRACTOR, metadata={"zoo": NAME, "seed": str(seed)})
        block = modes > 1
        features = (extract_maps if block else extract_features)(extractor, x_train)  # cached for every head
        bar.update(task, advance=1, description=f"{NAME}: task heads")
        for chunk in chunks:
            for mode in mode_ids:
                if all(checkpoint_path(out, c, k, mode).is_file() for c in chunk for k in range(num_checkpoints)):
                    continue
                for code, states in zip(chunk, train_heads(chunk, features, y_train, seed=seed, mode=mode or 0,
                                                             num_checkpoints=num_checkpoints, block=block)):
                    for k, state in enumerate(states):
                        save_state_dict(state, checkpoint_path(out, code, k, mode), metadata={
                            "zoo": NAME, "task": code, "checkpoint": str(k), "seed": str(seed),
                            **({} if mode is None else {"mode": str(mode)})})
            bar.advance(task, len(chunk))
        bar.update(task, description=f"{NAME}: evaluating")
        manifest = _manifest(out, codes, num_checkpoints, settings, mode_ids)
    for folder, members in ((TRAIN_DIR, [c for c in codes if c not in heldout]),
                            (HELDOUT_DIR, [c for c in codes if c in heldout])):
        conditions = {checkpoint_name(c, k, m): code_bits(c) for c in members for m in mode_ids
                      for k in range(num_checkpoints)}
        tmp = out / folder / f".{CONDITIONS_FILE}.tmp"
        write_conditions(tmp, conditions)
        tmp.replace(out / folder / CONDITIONS_FILE)
    write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return out


def _prepare(out: Path, settings: dict, *, overwrite: bool) -> None:
    """Start a new zoo folder, or check that an interrupted one was started with ``settings``."""
    if out.exists() and not out.is_dir():
        raise RpgenError(f"output path {out} exists and is not a directory")
    if out.exists() and overwrite:
        check_replaceable(out)  # only an rpgen output may be deleted
        shutil.rmtree(out)
    if out.exists() and (out / MANIFEST).is_file():
        raise RpgenError(f"output directory {out} already holds a complete zoo (pass --overwrite to rebuild it)")
    if out.exists() and any(out.iterdir()):
        info = out / COLLECT_INFO
        if not info.is_file():
            raise RpgenError(f"output directory {out} already exists and is not a digits-tasks zoo "
                             "(pass --overwrite to replace it)")
        try:
            previous = json.loads(info.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            previous = None
        if previous != settings:
            raise RpgenError(f"{info}: the interrupted collect in {out} used other settings; "
                             "rerun it with the same ones or pass --overwrite")
        return
    (out / TRAIN_DIR).mkdir(parents=True, exist_ok=True)
    (out / HELDOUT_DIR).mkdir(parents=True, exist_ok=True)
    mark(out, later=(TRAIN_DIR, HELDOUT_DIR, COLLECT_INFO, MANIFEST, EXTRACTOR))
    write_text_atomic(out / COLLECT_INFO, json.dumps(settings, indent=1) + "\n")


def _manifest(out: Path, codes: list[str], num_checkpoints: int, settings: dict,
              mode_ids: list[int | None]) -> dict:
    """Accuracy of every saved checkpoint on its task (read back from the files; mode by mode, then
    checkpoint by checkpoint) and chance rates."""
    tasks = {}
    per_task = len(mode_ids) * num_checkpoints
    for i in range(0, len(codes), CHUNK_TASKS):
        chunk = codes[i:i + CHUNK_TASKS]
        heads = [load_file(checkpoint_path(out, c, k, m))
                 for c in chunk for m in mode_ids for k in range(num_checkpoints)]
        accuracy = batch_accuracy(heads, [c for c in chunk for _ in range(per_task)], zoo_dir=out)
        for j, code in enumerate(chunk):
            tasks[code] = {"split": HELDOUT_DIR if code in HELDOUT else TRAIN_DIR,
                           "accuracy": accuracy[j * per_task:(j + 1) * per_task],
                           "chance": chance_rate(code)}
    return {**settings, "bit_order": "character i of a code is the bit of digit class i",
            "extractor": EXTRACTOR, "train_dir": TRAIN_DIR, "heldout_dir": HELDOUT_DIR, "tasks": tasks}


def load_manifest(zoo_dir: str | Path) -> dict:
    """``zoo.json`` of a complete digits-tasks zoo."""
    path = Path(zoo_dir) / MANIFEST
    if not path.is_file():
        raise RpgenError(f"{zoo_dir} is not a complete digits-tasks zoo (no {MANIFEST}); "
                         "run `rpgen collect digits-tasks --out DIR` (again, to resume)")
    return json.loads(path.read_text(encoding="utf-8"))
