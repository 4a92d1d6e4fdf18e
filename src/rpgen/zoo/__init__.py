"""Checkpoint zoos that ``rpgen collect NAME`` builds; the registry of them is :mod:`rpgen.zoo.registry`."""

from rpgen.zoo.registry import ZOOS, Zoo, check_options, collect, get_zoo

__all__ = ["ZOOS", "Zoo", "check_options", "collect", "get_zoo"]
