"""Training: the PPO-clip token loss (``loss``), the RL loop, the SFT warm start and checkpoints."""
