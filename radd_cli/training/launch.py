"""How a training run was launched: as one process, or as one of several by a launcher (`radd train --gpus N`,
`accelerate launch`, torchrun) that this process finds in its environment.
"""

from __future__ import annotations

import os

from radd_cli.training.runtime import Sharding


def plans_to_shard(requested: str) -> bool:
    """Whether a run of this process's launch would be sharded, without starting one (`radd train --dry-run`)."""
    requested = Sharding(requested)
    asked = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    return requested == Sharding.fsdp or (requested == Sharding.auto and asked)


def launched_as_one_of_many() -> bool:
    """Whether this process was started by accelerate/torchrun as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1
