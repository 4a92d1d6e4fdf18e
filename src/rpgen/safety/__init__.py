"""Guards around every output: atomic writes (:mod:`~rpgen.safety.atomic`), the overwrite policy and
inputs never overwritten (:mod:`~rpgen.safety.overwrite`), owner files and the run lock
(:mod:`~rpgen.safety.locks`), RAM and disk checks before long steps (:mod:`~rpgen.safety.resources`)."""
