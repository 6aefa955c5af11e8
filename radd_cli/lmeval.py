"""`python -m radd_cli.lmeval ARGS`: lm-evaluation-harness's own command line, with `--model radd` registered.

lm-eval releases that do not read entry points (0.4.13 and older) find radd this way; `radd harness` does the
same from radd's own command line. The adapter is `radd_cli.evaluation.lmeval`.
"""

from radd_cli.evaluation.lmeval import RaddLM, register

__all__ = ["RaddLM", "register"]

if __name__ == "__main__":
    register()
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()
