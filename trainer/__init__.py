"""Trainer node: local training (plain PyTorch), data loading, and the CLI that wires them to the protocol."""
