"""`python -m radd_cli.lmeval ARGS`: lm-evaluation-harness's own command line, with `--model radd` registered.

lm-eval releases that do not read entry points (0.4.13 and older) find radd this way; `radd harness` does the
same from radd's own command line. radd's errors (a bad model_args, non-finite log-likelihoods) are one line and
a non-zero exit (2 for a bad model_args). The adapter is `radd_cli.evaluation.lmeval`.
"""

from radd_cli.evaluation.lmeval import RaddLM, main, register

__all__ = ["RaddLM", "register"]

if __name__ == "__main__":
    main()
