"""What training learns from: the checkpoint set (:mod:`~rpgen.data.checkpoint_set`), the tokens
made of it (:mod:`~rpgen.data.tokenizer`, :mod:`~rpgen.data.tokens`), its conditions
(:mod:`~rpgen.data.conditions`) and its lineage, the training run of every checkpoint
(:mod:`~rpgen.data.lineage`)."""

from rpgen.data.checkpoint_set import CheckpointSet

__all__ = ["CheckpointSet"]
