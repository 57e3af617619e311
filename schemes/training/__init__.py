"""Training loops, resumable checkpoints, data-parallel runs, and the removal attacks."""
