"""The distributional value function: returns and bins, the model, its training."""
