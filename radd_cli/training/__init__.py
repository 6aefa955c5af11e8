"""Training: recipes, the optimizer step (Learner), the loop (Trainer), run folders and their logs, memory
estimates, the accelerate runtime, sharding and launching.

May import core, io, data, sampling, evaluation, device, console, errors, files and validation.
"""
