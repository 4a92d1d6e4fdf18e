"""rpgen: generate neural-network weights with recurrent diffusion (RPG, arXiv 2501.11587)."""

from rpgen.errors import RpgenError

__all__ = ["RpgenError"]
__version__ = "0.1.0"
