"""Generation: a trained run loaded for sampling (:mod:`~rpgen.generation.loaded`), what each model
is made for (:mod:`~rpgen.generation.selection`), and the models streamed into files in the
zoo's form (:mod:`~rpgen.generation.writer`)."""

from rpgen.generation.loaded import Run, load_run
from rpgen.generation.writer import ModelWriter, generate, write_models

__all__ = ["ModelWriter", "Run", "generate", "load_run", "write_models"]
