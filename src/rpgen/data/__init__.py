"""What training learns from: the checkpoint set, its tokens, conditions and training runs."""
