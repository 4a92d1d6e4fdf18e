"""rpgen: generate neural-network weights with recurrent diffusion (RPG, arXiv 2501.11587).

The Python API (the functions the command line calls; see :mod:`rpgen.api`)::

    import rpgen
    rpgen.train("checkpoints/", "run/", config="quickstart")
    rpgen.generate("run/", "generated/", num=10)
    result = rpgen.evaluate("run/", "generated/", "rpgen.zoo.digits:evaluate")
    models = rpgen.load_run("run/").sample(4, seed=0)   # state dicts in memory

They are imported on first use, so ``import rpgen`` stays light.
"""

from rpgen.errors import RpgenError

__version__ = "0.1.0"
__all__ = ["RpgenError", "__version__", "collect", "evaluate", "generate", "load_run", "train"]
_API = ("collect", "evaluate", "generate", "load_run", "train")


def __getattr__(name: str):
    if name in _API:
        from rpgen import api

        return getattr(api, name)
    raise AttributeError(f"module 'rpgen' has no attribute {name!r}")
