"""Option types shared by several commands: one definition and one help text each.

Choices are the library's own Choice enums, so `--help` lists the allowed values and Typer refuses
anything else at parse time, before a model, tokenizer or dataset is touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from radd_cli.core.kv_cache import KVMode
from radd_cli.device import Precision
from radd_cli.errors import ConfigError
from radd_cli.sampling import MAX_STEPS, Confidence, Method, Remasking, StrategyName

SEED_HELP = "Random seed; sample i uses seed + i, whatever the batch."
MAX_SEED = 2**63 - 1

ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="radd export folder, published-layout folder, training run, or Hub id.")
]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
PrecisionOption = Annotated[
    Precision,
    typer.Option(
        "--precision",
        "--dtype",
        help="Trunk precision: auto is bf16 on GPUs and on CPUs with native bf16 (AVX-512 BF16, AMX), else fp32.",
    ),
]
CompileOption = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="torch.compile the network for inference: it compiles once (minutes on a CPU), then runs faster; "
        "without a compiler it says so and runs as usual.",
    ),
]
JsonOption = Annotated[Optional[Path], typer.Option("--json", help="Also write the results to this JSON file.")]
SeedOption = Annotated[int, typer.Option("--seed", min=0, max=MAX_SEED, help=SEED_HELP)]
BatchSizeOption = Annotated[int, typer.Option("--batch-size", min=1, help="Sequences per network call.")]

# Sampling (radd sample, radd infill)
NumSamplesOption = Annotated[int, typer.Option("--num-samples", "-n", min=1, help="How many sequences to draw.")]
StepsOption = Annotated[
    Optional[int],
    typer.Option("--steps", min=1, max=MAX_STEPS, help="Diffusion steps (default: the length)."),
]
MethodOption = Annotated[Method, typer.Option("--method", help="The sampler; ordered unmasks one position per call.")]
OrderOption = Annotated[
    str, typer.Option("--order", help="For --method ordered: forward, backward, random, or a file of positions.")
]
StrategyOption = Annotated[
    Optional[StrategyName],
    typer.Option("--strategy", help="How tokens are drawn (default: from --top-p/--top-k, else direct)."),
]
TopPOption = Annotated[
    Optional[float], typer.Option("--top-p", help="Nucleus sampling: keep the top tokens of this mass.")
]
TopKOption = Annotated[Optional[int], typer.Option("--top-k", help="Keep only the k most likely tokens.")]
TemperatureOption = Annotated[float, typer.Option("--temperature", help="Divide the log-probabilities by this.")]
NoCacheOption = Annotated[
    bool, typer.Option("--no-cache", help="Call the network on every row at every step (the uncached baseline).")
]
BlockLengthOption = Annotated[
    Optional[int],
    typer.Option("--block-length", min=1, help="Fill blocks of this many positions left to right (semi-autoregressive)."),
]
ConfidenceOption = Annotated[
    Confidence, typer.Option("--confidence", help="confidence, threshold: how sure the network is of a proposal.")
]
GreedyOption = Annotated[
    bool, typer.Option("--greedy", help="confidence, threshold: propose the most likely token instead of a draw.")
]
ThresholdOption = Annotated[
    Optional[float], typer.Option("--threshold", help="threshold: unmask every position at least this confident.")
]
RemaskingOption = Annotated[Remasking, typer.Option("--remasking", help="remdm: the remasking schedule.")]
EtaOption = Annotated[float, typer.Option("--eta", help="remdm: the remasking strength η.")]
KVCacheOption = Annotated[
    KVMode,
    typer.Option(
        "--kv-cache",
        help="With --block-length: compute only the current block against kept keys and values of the prefix "
        "(prefix) or of prefix and suffix (dual), refreshed when a block starts (an approximation).",
    ),
]
KVRefreshOption = Annotated[
    int, typer.Option("--kv-refresh", min=0, help="With --kv-cache: also refresh after this many block calls (0: never).")
]
GuidanceOption = Annotated[
    float, typer.Option("--guidance", help="Classifier-free guidance weight w for conditional generation (0: none).")
]
StopAtEosOption = Annotated[bool, typer.Option("--stop-at-eos", help="Trim each sample at its first end-of-text token.")]
OutputOption = Annotated[
    Optional[Path],
    typer.Option("--output", "-o", help="Write the samples to a .txt or .jsonl (text, ids, seed, NFE, settings)."),
]


def check_writable(path: Path | None, option: str) -> None:
    """Refuse an output path whose folder does not exist, before any work is done."""
    if path is not None and not path.parent.is_dir():
        raise ConfigError(f"{option} {path}: the folder {path.parent} does not exist")
    if path is not None and path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file name")
