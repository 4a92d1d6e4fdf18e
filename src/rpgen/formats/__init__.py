"""Checkpoint folders as files: what rpgen reads and writes, and nothing it computes.

- :mod:`~rpgen.formats.listing`... (filled in below)
"""
