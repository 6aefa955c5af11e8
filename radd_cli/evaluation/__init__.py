"""Measuring models: zero-shot perplexity with error bars, conditional likelihoods, sample quality, task
accuracy, sampler sweeps, and the lm-evaluation-harness adapter.

May import core, io, data, sampling, device, errors, files and validation; never training or the edges.
"""

from radd_cli.evaluation.perplexity import PerplexityReport, evaluate_perplexity

__all__ = ["PerplexityReport", "evaluate_perplexity"]
