"""Aligning a checkpoint folder: every checkpoint permuted to match a reference, written as a new
folder (``RUN_DIR/aligned/`` when ``rpgen train --align weight-matching``)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from rpgen.align.matching import permute, weight_distance, weight_matching
from rpgen.align.spec import PermutationSpec, load_spec
from rpgen.data.checkpoint_set import CheckpointSet
from rpgen.display import progress_bar
from rpgen.errors import RpgenError
from rpgen.formats.checkpoints import load_state_dict, save_state_dict
from rpgen.formats.safetensors_io import SafetensorsReader
from rpgen.safety.atomic import atomic_dir
from rpgen.safety.overwrite import check_not_overlapping

SUMMARY = "align.json"  # written beside the aligned checkpoints


def align_checkpoints(checkpoints: str | Path | CheckpointSet, out_dir: str | Path, spec: PermutationSpec | str | Path,
                      *, reference: int | str = 0, max_iter: int = 100, seed: int = 0, overwrite: bool = False,
                      progress: bool = True, lineage: Sequence[int] | None = None) -> dict:
    """Write every checkpoint of ``checkpoints`` (a folder, or a set already opened) into ``out_dir``
    aligned to one of them.

    ``spec``: a :class:`PermutationSpec` or a spec file; ``reference``: the reference checkpoint's
    index or file name (written unchanged); ``overwrite`` replaces an earlier aligned folder (never
    anything rpgen did not write). Files keep their names (as ``.safetensors``, with their
    metadata plus ``aligned_to``); ``out_dir`` appears complete or not at all and also holds
    ``align.json``, the summary returned: the reference, each checkpoint's weight distance
    (:func:`weight_distance`) to the reference before and after alignment, and the seconds taken.
    Only checkpoint files (state_dicts) are supported, not peft adapter or model folders.

    ``lineage`` (the training run of each checkpoint, in folder order): checkpoints of one run share
    their hidden units' identity, so each run is matched once (on its first checkpoint) and that
    permutation moves all of its checkpoints; the reference's run is left as it is. Matching every
    checkpoint alone can permute two epochs of one run differently (measured on the 10-run digits
    zoo: a generator with one state per run then ended at loss 0.09 instead of 0.0004).
    """
    start = time.perf_counter()
    if not isinstance(checkpoints, CheckpointSet):
        checkpoints = CheckpointSet.open(checkpoints)
    checkpoint_dir = checkpoints.folder
    folder = next((p for p in checkpoints.paths if p.is_dir()), None)
    if folder is not None:
        raise RpgenError(f"{folder}: align_checkpoints reads checkpoint files (state_dicts), not adapter or model "
                         "folders")
    opened, paths = checkpoints.checkpoints, checkpoints.paths
    stems = [p.stem for p in paths]
    twin = next((p for p in paths if stems.count(p.stem) > 1), None)
    if twin is not None:
        raise RpgenError(f"{twin}: another checkpoint of {checkpoint_dir} has the name {twin.stem!r}, and both would "
                         f"be written as {twin.stem}.safetensors")
    names = [p.name for p in paths]
    if isinstance(reference, str):
        if reference not in names:
            raise RpgenError(f"reference {reference!r} is not a checkpoint of {checkpoint_dir} ({names[0]}, ...)")
        reference = names.index(reference)
    if not 0 <= reference < len(paths):
        raise RpgenError(f"reference index {reference} is out of range for {len(paths)} checkpoints")
    if not isinstance(spec, PermutationSpec):
        spec = load_spec(spec, opened[reference].meta())
    spec.check(opened[reference].meta(), where=paths[reference])
    check_not_overlapping(out_dir, {"checkpoint folder": checkpoint_dir})
    ref_path = paths[reference]
    ref = load_state_dict(ref_path)
    summary: dict = {"reference": ref_path.name, "groups": spec.groups, "distance_before": {}, "distance_after": {}}
    with atomic_dir(out_dir, overwrite=overwrite) as tmp, progress_bar(enabled=progress, show_loss=False) as bar:
        task = bar.add_task("aligning", total=len(paths))
        perms_of: dict[int, dict[str, Tensor] | None] = {}  # training run -> its permutation (None: the reference's)
        if lineage is not None:
            perms_of[lineage[reference]] = None
        for i, path in enumerate(paths):
            state_dict = ref if path == ref_path else load_state_dict(path)
            training_run = lineage[i] if lineage is not None else -1 - i  # without a lineage: each one alone
            if training_run not in perms_of:
                perms_of[training_run] = (None if path == ref_path
                                  else weight_matching(ref, state_dict, spec, max_iter=max_iter, seed=seed))
            perms = perms_of[training_run]
            aligned = state_dict if perms is None else permute(state_dict, spec, perms)
            summary["distance_before"][path.name] = weight_distance(state_dict, ref)
            summary["distance_after"][path.name] = weight_distance(aligned, ref)
            metadata = {**_metadata(path), "aligned_to": ref_path.name}
            save_state_dict(aligned, tmp / f"{path.stem}.safetensors", metadata=metadata)
            bar.advance(task)
        summary["seconds"] = round(time.perf_counter() - start, 3)
        (tmp / SUMMARY).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def _metadata(path: Path) -> dict[str, str]:
    """A safetensors file's metadata ({} for other files)."""
    if path.suffix.lower() != ".safetensors":
        return {}
    reader = SafetensorsReader(path)
    try:
        return dict(reader.metadata)
    finally:
        reader.close()
