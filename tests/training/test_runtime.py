"""The runtime: the one place that knows devices, precision and accelerate, and the verbs the trainer uses."""

import pytest
import torch

from radd_cli.device import Precision, autocast, pick_device
from radd_cli.errors import ConfigError
from radd_cli.training import launch, runtime
from radd_cli.training.runtime import build_runtime
from tests.conftest import require

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")


def test_cpu_autocast_in_bf16_keeps_norms_and_log_probs_in_float32(tiny_model):
    tokens = torch.randint(0, tiny_model.vocab_size + 1, (2, tiny_model.config.length))
    x = torch.ones(1, 4, tiny_model.config.hidden_size)
    with autocast(torch.device("cpu"), Precision.bf16):
        assert (x @ x.mT).dtype == torch.bfloat16
        assert tiny_model.blocks[0].norm1(x).dtype == torch.float32
        assert tiny_model(tokens).dtype == torch.float32
        assert torch.allclose(tiny_model(tokens).exp().sum(-1), torch.ones(()), atol=1e-5)



@pytest.mark.precision
def test_cpu_bf16_sampling_makes_the_same_network_calls_as_float32(tiny_model):
    """The cached sampler's calls depend only on the unmasking times, drawn up front: bf16 keeps NFE = E-NFE's draw."""
    from radd_cli.core.schedule import get_schedule
    from radd_cli.sampling import sample
    from radd_cli.sampling.nfe import expected_nfe

    schedule, length = get_schedule("loglinear"), tiny_model.config.length
    nfe = {}
    for precision in (Precision.fp32, require(Precision.bf16)):
        result = sample(tiny_model, schedule, num_samples=64, length=length, steps=64,
                        generator=torch.Generator().manual_seed(3), precision=precision)
        nfe[precision] = result.nfe
    assert nfe[Precision.bf16] == nfe[Precision.fp32] < 64
    assert abs(nfe[Precision.bf16] - expected_nfe(schedule, 64, length)) < 0.25 * expected_nfe(schedule, 64, length)


@needs_no_gpu
@pytest.mark.parametrize(
    "device, message",
    [
        ("cuda", "device: cuda asks for a GPU, but torch sees none"),
        ("cuda:3", "asks for a GPU"),
        ("meta", "radd runs on cpu or cuda devices"),
        ("mps", "radd runs on cpu or cuda devices"),
        ("gpu0", "is not a device"),
    ],
)
def test_devices_that_are_not_there_are_config_errors(device, message):
    with pytest.raises(ConfigError, match=message):
        pick_device(device)


def test_the_cpu_is_always_there_and_autocast_is_a_no_op_in_fp32():
    assert pick_device("cpu") == torch.device("cpu")
    x = torch.ones(2, 2)
    with autocast(torch.device("cpu"), Precision.fp32):
        assert (x @ x).dtype == torch.float32


def test_the_runtime_verbs_train_a_model_and_round_trip_its_state(tmp_path):
    runtime = build_runtime("fp32", cpu=True)
    assert runtime.world_size == 1 and runtime.is_main and runtime.precision is Precision.fp32
    assert not runtime.sharded
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    model, optimizer = runtime.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    x = torch.randn(8, 3)
    with runtime.no_sync(model, sync=False):
        runtime.backward(model(x).pow(2).mean())
    norm = runtime.clip_grad_norm(model.parameters(), 1e-3)
    assert norm > 1e-3 and torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()])) <= 1.01e-3
    before = model.weight.detach().clone()
    assert runtime.optimizer_step(optimizer) and not torch.equal(model.weight, before)
    runtime.save_state(str(tmp_path / "state"))
    with torch.no_grad():
        model.weight.zero_()
    runtime.load_state(str(tmp_path / "state"))
    assert not torch.equal(model.weight, torch.zeros_like(model.weight))
    assert runtime.sum(torch.tensor([2.0])).item() == 2.0 and runtime.any(True) and not runtime.any(False)


class Launch:
    """What resolve_sharding reads of an accelerate Accelerator."""

    def __init__(self, kind: str = "NO"):
        self.distributed_type = f"DistributedType.{kind}"
        self.state = None  # accelerate keeps no FSDP plugin for CPU launches


def test_sharding_follows_the_recipe_and_the_launch(monkeypatch):
    for variable in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_MEGATRON_LM"):
        monkeypatch.delenv(variable, raising=False)
    resolve = runtime.resolve_sharding
    assert not resolve(runtime.Sharding.auto, Launch(), Precision.fp32)
    assert resolve(runtime.Sharding.fsdp, Launch(), Precision.bf16)
    assert resolve(runtime.Sharding.auto, Launch("FSDP"), Precision.fp32)  # an accelerate config with FSDP
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # the same config on CPUs, where accelerate ignores it
    assert resolve(runtime.Sharding.auto, Launch("MULTI_CPU"), Precision.fp32) and launch.plans_to_shard("auto")
    with pytest.raises(ConfigError, match="asks for FSDP but training.sharding = 'none'"):
        resolve(runtime.Sharding.none, Launch("MULTI_CPU"), Precision.fp32)
    with pytest.raises(ConfigError, match="not fp16"):
        resolve(runtime.Sharding.fsdp, Launch(), Precision.fp16)
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    assert not launch.plans_to_shard("auto") and launch.plans_to_shard("fsdp")
    for kind in ("DEEPSPEED", "MEGATRON_LM"):
        with pytest.raises(ConfigError, match=f"radd train shards with FSDP, not {kind}"):
            resolve(runtime.Sharding.auto, Launch(kind), Precision.bf16)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ConfigError, match="launch with an accelerate config that uses FSDP"):
        resolve(runtime.Sharding.fsdp, Launch("MULTI_GPU"), Precision.bf16)


def test_a_checkpoint_of_the_other_layout_is_refused_with_the_way_to_resume_it(tmp_path):
    (tmp_path / "sharded").mkdir()
    (tmp_path / "sharded" / ".metadata").write_bytes(b"")
    with pytest.raises(ConfigError, match="saved with sharding; resume it with training.sharding = 'fsdp'"):
        build_runtime("fp32", cpu=True).load_state(str(tmp_path))


def test_the_launch_fsdp_settings_radd_follows_and_the_one_it_refuses(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    assert runtime.reshard_after_forward(Launch("MULTI_CPU"))
    monkeypatch.setenv("FSDP_RESHARD_AFTER_FORWARD", "false")  # SHARD_GRAD_OP's FSDP2 spelling
    assert not runtime.reshard_after_forward(Launch("MULTI_CPU"))
    monkeypatch.setenv("FSDP_OFFLOAD_PARAMS", "true")
    with pytest.raises(ConfigError, match="offload parameters to the CPU"):
        runtime.reshard_after_forward(Launch("MULTI_CPU"))


def test_only_the_runtime_imports_accelerate():
    import ast
    from pathlib import Path

    package = Path(runtime.__file__).parents[1]
    importers = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name == "accelerate" or name.startswith("accelerate.") for name in names):
                importers.add(path.relative_to(package).as_posix())
    assert importers == {"training/runtime.py"}
