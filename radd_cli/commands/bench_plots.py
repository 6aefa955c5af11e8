"""The figures radd bench writes (--plot): NFE and time against steps, quality against calls and wall time."""

from __future__ import annotations

from pathlib import Path

from radd_cli.console import err
from radd_cli.errors import ConfigError
from radd_cli.files import write_atomically


def pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'radd[plot]'") from None
    return plt


def plot_sample(rows, path: Path) -> None:
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in sorted({row.cache for row in rows}):
        chosen = [row for row in rows if row.cache == mode]
        steps = [row.steps for row in chosen]
        left.plot(steps, [row.nfe for row in chosen], marker="o", label=f"cache {mode}")
        right.plot(steps, [row.seconds for row in chosen], marker="o", label=f"cache {mode}")
    chosen = [row for row in rows if row.cache == "on"]
    left.plot([r.steps for r in chosen], [r.expected_nfe for r in chosen], "k--", label="E-NFE")
    for axis, name in ((left, "network evaluations per sequence"), (right, "seconds per batch")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("sampling steps")
        axis.set_ylabel(name)
        axis.legend()
    figure.tight_layout()
    write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=120))
    err.print(f"wrote {path}")


def plot_quality(rows, reference, path: Path) -> None:
    """Each quality measure (a row of panels) against network calls and against wall time (the columns)."""
    plt = pyplot()
    exact = reference is not None
    measures = (
        [("forbidden_rate", "forbidden-transition rate"), ("nll_per_token", "NLL per token under the language")]
        if exact
        else [("entropy", "unigram entropy (nats)"), ("distinct4", "distinct-4")]
    )
    costs = [("calls_per_sequence", "network calls per sequence"), ("seconds", "wall time (s)")]
    figure, axes = plt.subplots(len(measures), len(costs), figsize=(11, 8), squeeze=False)

    def value(row, name):
        return row.distinct[4] if name == "distinct4" else getattr(row, name)

    for (name, label), panel_row in zip(measures, axes):
        for (cost, cost_label), axis in zip(costs, panel_row):
            for line in dict.fromkeys(line_of(row) for row in rows):
                chosen = sorted((row for row in rows if line_of(row) == line), key=lambda row: getattr(row, cost))
                axis.plot([getattr(r, cost) for r in chosen], [value(r, name) for r in chosen], marker="o", label=line)
            if cost == "calls_per_sequence":
                frontier = sorted((row for row in rows if row.pareto), key=lambda row: row.calls_per_sequence)
                xs, ys = [r.calls_per_sequence for r in frontier], [value(r, name) for r in frontier]
                axis.plot(xs, ys, "k--", lw=1, label="Pareto frontier (calls)")
                axis.scatter(xs, ys, s=90, facecolors="none", edgecolors="k")
            if exact:
                axis.axhline(value(reference, name), color="grey", lw=1, ls=":", label="the language itself")
            axis.set_xscale("log")
            axis.set_xlabel(cost_label)
            axis.set_ylabel(label)
    axes[0][0].legend(fontsize=6)
    figure.tight_layout()
    write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=120))
    err.print(f"wrote {path}")


def line_of(row) -> str:
    """One plotted line per sampler, block length and cache mode."""
    extra = [f"blocks of {row.settings['block_length']}"] if "block_length" in row.settings else []
    extra += [f"kv {row.settings['kv_cache']}"] if "kv_cache" in row.settings else []
    return f"{row.method} ({', '.join(extra)})" if extra else row.method
