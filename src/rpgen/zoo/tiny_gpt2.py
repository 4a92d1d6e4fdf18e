"""A transformer zoo: Trainer ``checkpoint-N/`` folders of a tiny GPT-2 that computes running sums.

Built offline from a random-init ``transformers.GPT2Config`` (2 layers, width 32, 2 heads, tied
input and output embeddings: 29K parameters) on a procedurally generated formal language:

    BOS x1 x2 ... xK SEP s1 s2 ... sK        s_i = (x1 + ... + x_i) mod SYMBOLS

(x_i drawn uniformly from SYMBOLS symbols, K = LENGTH). The loss and the metric cover only the K
answer tokens after SEP (the prefix is random, so it cannot be predicted). The later running sums
are hard for a 2-layer model: the 20 checkpoints score 80-86%, not 100%, so a worse generated
model shows. (Measured while choosing the recipe, 3 checkpoints each: 800 steps at 3e-3 -> 81%;
1,500 at 1e-3 -> 75%; 1,500 at 3e-3 -> 56%, a run that stalled.)

``collect_tiny_gpt2`` follows the paper's recipe with a real ``transformers.Trainer``: train from
scratch (no saves), then keep training at a small constant learning rate with ``save_steps``, so
the output folder holds what users' Trainer runs hold:
``checkpoint-50/``, ``checkpoint-100/``, ... each with ``config.json``, ``generation_config.json``,
``model.safetensors`` (the tied ``lm_head.weight`` is not in it), ``optimizer.pt``,
``scheduler.pt``, ``rng_state.pth``, ``trainer_state.json`` and ``training_args.bin``.

``evaluate`` (spec ``rpgen.zoo.tiny_gpt2:evaluate``) returns the next-token accuracy (%) on
held-out sequences that no training batch contains, and ``per_example``: one boolean per answer
token. It reads the model's size from the state_dict's shapes (heads: :data:`N_HEAD`), so it
also scores zoos collected with other ``n_layer`` / ``n_embd``.

Shapes: B = batch, T = sequence length (2K + 2), V = vocabulary (SYMBOLS + 2).
"""

from __future__ import annotations

import re
import tempfile
from functools import lru_cache
from pathlib import Path

import torch

from rpgen.errors import RpgenError
from rpgen.safety.atomic import atomic_dir
from rpgen.display import progress_bar

NAME = "tiny-gpt2"
SYMBOLS = 8
LENGTH = 6
BOS, SEP = SYMBOLS, SYMBOLS + 1
VOCAB = SYMBOLS + 2
SEQ_LEN = 2 * LENGTH + 2
N_HEAD = 2
TEST_SIZE = 500
TEST_SEED = 1_000_003
PRETRAIN_STEPS = 800
PRETRAIN_LR = 3e-3
FINETUNE_LR = 3e-4
SAVE_STEPS = 50
BATCH_SIZE = 64


def _require_transformers():
    try:
        import transformers
    except ImportError as exc:
        raise RpgenError(f"the tiny-gpt2 zoo needs transformers ({exc.name} is not installed): "
                         "pip install 'rpgen[adapters]'") from None
    return transformers


def make_sequences(num: int, *, seed: int) -> torch.Tensor:
    """(num, T) long tensor of task sequences ``BOS x SEP cumsum(x) % SYMBOLS``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(SYMBOLS, (num, LENGTH), generator=g)  # (num, K)
    bos, sep = torch.full((num, 1), BOS), torch.full((num, 1), SEP)
    return torch.cat([bos, x, sep, x.cumsum(dim=1) % SYMBOLS], dim=1)  # (num, T)


def answer_labels(ids: torch.Tensor) -> torch.Tensor:
    """(B, T) labels for ``GPT2LMHeadModel``: the input ids on the K answer positions, -100 elsewhere."""
    labels = torch.full_like(ids, -100)
    labels[:, LENGTH + 2:] = ids[:, LENGTH + 2:]
    return labels


@lru_cache(maxsize=1)
def test_sequences() -> torch.Tensor:
    """(TEST_SIZE, T) held-out sequences: distinct, fixed, and never in a training batch."""
    ids = make_sequences(4 * TEST_SIZE, seed=TEST_SEED)
    first: dict[int, int] = {}
    for row, key in enumerate(_prefix_keys(ids).tolist()):
        first.setdefault(key, row)
    return ids[sorted(first.values())[:TEST_SIZE]]


def _prefix_keys(ids: torch.Tensor) -> torch.Tensor:
    """(B,) one integer per sequence prefix x1..xK (base SYMBOLS), to compare sets of sequences."""
    weights = SYMBOLS ** torch.arange(LENGTH)
    return (ids[:, 1:LENGTH + 1] * weights).sum(dim=1)


class _TrainingSequences(torch.utils.data.Dataset):
    """``size`` training sequences for the Trainer; held-out prefixes are redrawn, never trained on."""

    def __init__(self, size: int, *, seed: int) -> None:
        ids = make_sequences(size, seed=seed)
        held_out = torch.isin(_prefix_keys(ids), _prefix_keys(test_sequences()))
        if bool(held_out.any()):  # swap the symbols of the held-out prefixes for fresh random ones
            g = torch.Generator().manual_seed(seed + 1)
            while bool(held_out.any()):
                fresh = make_sequences(int(held_out.sum()), seed=int(torch.randint(2**31, (), generator=g)))
                ids[held_out] = fresh
                held_out = torch.isin(_prefix_keys(ids), _prefix_keys(test_sequences()))
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.ids[i]
        return {"input_ids": ids, "labels": answer_labels(ids[None])[0]}


def gpt2_config(*, n_layer: int = 2, n_embd: int = 32):
    """The zoo's ``GPT2Config``: random init, tied embeddings, no dropout."""
    transformers = _require_transformers()
    return transformers.GPT2Config(vocab_size=VOCAB, n_positions=SEQ_LEN, n_embd=n_embd, n_layer=n_layer,
                                   n_head=N_HEAD, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                   tie_word_embeddings=True, bos_token_id=BOS, eos_token_id=SEP)


def collect_tiny_gpt2(
    out_dir: str | Path,
    *,
    num_checkpoints: int = 20,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    n_layer: int = 2,
    n_embd: int = 32,
    pretrain_steps: int = PRETRAIN_STEPS,
    save_steps: int = SAVE_STEPS,
) -> list[Path]:
    """Train a tiny GPT-2 with ``transformers.Trainer`` and keep its ``checkpoint-N/`` folders.

    Pre-trains ``pretrain_steps`` steps (warm-up + cosine at :data:`PRETRAIN_LR`, nothing saved),
    then trains ``num_checkpoints * save_steps`` more steps at :data:`FINETUNE_LR` and lets the
    Trainer save every ``save_steps``: ``out_dir/checkpoint-{save_steps}``, ... Refuses an existing
    ``out_dir`` unless ``overwrite``; the folder appears complete or not at all. One torch thread,
    CPU only, nothing downloaded; the same seed gives the same weights.
    """
    if num_checkpoints < 2:
        raise RpgenError(f"num_checkpoints must be at least 2 (a zoo needs 2+), got {num_checkpoints}")
    for name, value in (("pretrain_steps", pretrain_steps), ("save_steps", save_steps), ("n_layer", n_layer)):
        if value < 1:
            raise RpgenError(f"{name} must be >= 1, got {value}")
    if n_embd < N_HEAD or n_embd % N_HEAD:
        raise RpgenError(f"n_embd must be a multiple of {N_HEAD}, got {n_embd}")
    transformers = _require_transformers()
    out_dir = Path(out_dir)
    finetune_steps = num_checkpoints * save_steps
    previous_threads = torch.get_num_threads()

    class Advance(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            bar.advance(task)

    with atomic_dir(out_dir, overwrite=overwrite) as tmp, progress_bar(enabled=progress, show_loss=False) as bar, \
            tempfile.TemporaryDirectory(prefix="rpgen-tiny-gpt2-") as scratch:
        task = bar.add_task("tiny-gpt2: training", total=pretrain_steps + finetune_steps)
        torch.set_num_threads(1)
        try:
            with torch.random.fork_rng(devices=[]):  # the Trainer seeds the global RNG; restore the caller's
                transformers.set_seed(seed)
                model = transformers.GPT2LMHeadModel(gpt2_config(n_layer=n_layer, n_embd=n_embd))
                stages = [(pretrain_steps, PRETRAIN_LR, "cosine", "no", Path(scratch)),
                          (finetune_steps, FINETUNE_LR, "constant", "steps", tmp)]
                for i, (steps, lr, schedule, save, folder) in enumerate(stages):
                    args = transformers.TrainingArguments(
                        output_dir=str(folder), max_steps=steps, per_device_train_batch_size=BATCH_SIZE,
                        learning_rate=lr, lr_scheduler_type=schedule, warmup_steps=steps // 10 if i == 0 else 0,
                        weight_decay=0.0, save_strategy=save, save_steps=save_steps, logging_strategy="no",
                        report_to=[], disable_tqdm=True, seed=seed + i, data_seed=seed + i, use_cpu=True,
                        dataloader_num_workers=0)
                    data = _TrainingSequences(steps * BATCH_SIZE, seed=seed * 1000 + i)
                    trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
                                                   callbacks=[Advance()])
                    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)  # its summary line
                    trainer.train()
        finally:
            torch.set_num_threads(previous_threads)
        names = sorted((p.name for p in tmp.glob("checkpoint-*")), key=lambda n: int(n.split("-")[1]))
    if len(names) != num_checkpoints:  # pragma: no cover - the Trainer's save schedule changed
        raise RpgenError(f"expected {num_checkpoints} Trainer checkpoints in {out_dir}, found {len(names)}")
    return [out_dir / name for name in names]


def _model_from(state_dict: dict[str, torch.Tensor]):
    """A ``GPT2LMHeadModel`` sized from the state_dict's shapes, holding its weights (tie kept)."""
    transformers = _require_transformers()
    wte = state_dict.get("transformer.wte.weight")
    if wte is None:
        raise RpgenError("not a tiny-gpt2 state_dict: no key 'transformer.wte.weight'")
    layers = {int(m.group(1)) for k in state_dict if (m := re.match(r"transformer\.h\.(\d+)\.", k))}
    model = transformers.GPT2LMHeadModel(gpt2_config(n_layer=len(layers), n_embd=int(wte.shape[1])))
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to transformer.wte.weight
    if missing or unexpected:
        raise RpgenError(f"not a tiny-gpt2 state_dict: missing {missing[:1]}, unexpected {unexpected[:1]}")
    return model.eval()


def evaluate(state_dict: dict[str, torch.Tensor]) -> dict[str, float | list[bool]]:
    """Next-token accuracy (%) on the answer tokens of the held-out sequences; ``per_example``: one
    boolean per answer token (TEST_SIZE x LENGTH)."""
    model = _model_from({k: v.to("cpu") for k, v in state_dict.items()})
    ids = test_sequences()
    with torch.inference_mode():
        logits = model(input_ids=ids).logits  # (B, T, V)
    predicted = logits[:, LENGTH + 1:-1].argmax(dim=-1)  # (B, K): the prediction for each answer token
    correct = (predicted == ids[:, LENGTH + 2:]).reshape(-1)  # (B * K,)
    return {"accuracy": 100.0 * int(correct.sum()) / correct.numel(), "per_example": correct.tolist()}
