"""The multi-turn agent protocol and rollouts."""
