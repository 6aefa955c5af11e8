"""`radd bench`'s library: random models of named sizes and the timing of sampling, training and evaluation.

May import every library package (it times the code users run); never the edges (commands, cli, serve).
"""
