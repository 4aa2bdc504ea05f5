"""The pi0 policy: LeRobot compatibility, the model with guidance, indicator conditioning, its data and training."""
