"""Trainer node: local training (plain PyTorch), data loading, and the CLI loop that wires them to the protocol."""
