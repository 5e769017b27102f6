"""The PyTorch side: two-tower models, losses, streaming, training and evaluation."""
