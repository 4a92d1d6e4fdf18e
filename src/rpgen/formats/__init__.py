"""Checkpoint folders as files: what rpgen reads and writes, and nothing it computes.

- :mod:`~rpgen.formats.listing`: which entries of a folder are checkpoints, in which order.
- :mod:`~rpgen.formats.checkpoints`: one checkpoint's tensors, loaded, read lazily, validated, saved.
- :mod:`~rpgen.formats.adapter_folders`, :mod:`~rpgen.formats.model_folders`: peft adapter folders
  and transformers model folders as checkpoints.
- :mod:`~rpgen.formats.safetensors_io`: safetensors read and written piece by piece.
- :mod:`~rpgen.formats.output_forms`: the form generated models take (files, adapter or model folders).
- :mod:`~rpgen.formats.json_files`, :mod:`~rpgen.formats.dtypes`: JSON objects and dtype names.

:class:`rpgen.data.CheckpointSet` is the zoo folder opened once on top of these.
"""
