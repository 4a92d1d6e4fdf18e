"""Guards around every output: atomic writes, the overwrite policy, locks, RAM and disk checks."""
