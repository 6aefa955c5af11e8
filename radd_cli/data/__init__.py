"""Data sources: datasets and local files to token blocks, detokenizers, the Markov language, prompt/response
rows and the built-in tasks.

May import core, io, errors, files and validation; never sampling, training or the edges.
"""
