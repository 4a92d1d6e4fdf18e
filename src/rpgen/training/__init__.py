"""Training: the trainer (:mod:`~rpgen.training.trainer`), the one resolution pass of every "auto"
setting (:mod:`~rpgen.training.resolve`), the fit loop (:mod:`~rpgen.training.fit`), the resumable
state (:mod:`~rpgen.training.state`) and the loss plot (:mod:`~rpgen.training.loss_plot`)."""

from rpgen.training.state import saved_config
from rpgen.training.trainer import train

__all__ = ["saved_config", "train"]
