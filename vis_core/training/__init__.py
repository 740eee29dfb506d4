"""Training in plain PyTorch: batches, optimiser, schedule, the training step (no Ray)."""
