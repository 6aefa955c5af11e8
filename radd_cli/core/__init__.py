"""The network and the math: the model, how callers score with it, noise schedules, masking, the objectives.

Imports nothing of radd's but errors and validation: everything else builds on it.
"""
