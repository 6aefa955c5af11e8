"""Model files and tokenizers: model folders in every layout radd reads, tokenizers, loading for inference,
and reading weights to fine-tune from.

May import core, device, errors, files and validation.
"""
