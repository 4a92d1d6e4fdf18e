"""Training a method on a checkpoint set (see :mod:`rpgen.training.trainer`)."""


def __getattr__(name: str):
    if name in ("train", "saved_config"):
        from rpgen.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'rpgen.training' has no attribute {name!r}")
