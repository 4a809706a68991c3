"""Worked examples for ``refimpl conform`` (importable after installation, from any directory):
``proofs.examples.torch_fa`` (feedback alignment in torch, with a slipped variant)."""
