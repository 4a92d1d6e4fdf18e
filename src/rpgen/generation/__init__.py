"""Sampling new parameter sets from a trained run and writing them (see :mod:`rpgen.generation.writer`)."""

from rpgen.generation.writer import ModelWriter, generate

__all__ = ["ModelWriter", "generate"]
