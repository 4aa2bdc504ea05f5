"""Policies in simulation: LIBERO, the embedded world's batched episodes, rollouts and evaluation."""
