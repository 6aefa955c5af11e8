"""device.py: the one rule for what `auto` means, the native-bf16 switch, and autocast."""

import os

import pytest
import torch

from radd_cli import device
from radd_cli.device import AUTO_PRECISION, Hardware, Precision, Work, autocast, resolve_precision
from radd_cli.errors import ConfigError

F, B, H = Precision.fp32, Precision.bf16, Precision.fp16


@pytest.fixture
def native_bf16(monkeypatch):
    """Set whether this CPU counts as having native bf16."""

    def set_to(native: bool) -> None:
        monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native)

    return set_to


def test_auto_is_one_table_of_work_by_hardware_and_every_cell_is_reached(native_bf16, monkeypatch):
    assert set(AUTO_PRECISION) == set(Work) and all(set(row) == set(Hardware) for row in AUTO_PRECISION.values())
    found = {}
    for hardware, kind, native in (
        (Hardware.cpu, "cpu", False),
        (Hardware.cpu_bf16, "cpu", True),
        (Hardware.gpu, "cuda", True),
        (Hardware.gpu_fp16, "cuda", False),
    ):
        native_bf16(native)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda native=native: native)
        for work in Work:
            found[work, hardware] = resolve_precision("auto", kind, work=work)
    assert found == {(work, hardware): AUTO_PRECISION[work][hardware] for work in Work for hardware in Hardware}


def test_the_measured_rule_trains_in_fp32_and_samples_in_bf16_on_a_cpu_with_native_bf16(native_bf16):
    native_bf16(True)
    assert resolve_precision("auto", "cpu", work=Work.train) is F  # bf16 was no faster, and less accurate
    assert [resolve_precision("auto", "cpu", work=w) for w in (Work.sample, Work.eval, Work.serve)] == [B, B, B]
    native_bf16(False)
    assert {resolve_precision("auto", "cpu", work=w) for w in Work} == {F}
    # served samples equal offline ones only if serving and sampling pick the same precision everywhere
    assert AUTO_PRECISION[Work.serve] == AUTO_PRECISION[Work.sample]


def test_precision_on_a_cpu_without_native_bf16(native_bf16):
    native_bf16(False)
    assert resolve_precision(Precision.fp32, "cpu", work=Work.sample) is F
    with pytest.raises(ConfigError, match="precision: bf16 needs a GPU or a CPU with native bf16.*RADD_NATIVE_BF16=1"):
        resolve_precision("bf16", "cpu", work=Work.sample)
    with pytest.raises(ConfigError, match="precision: fp16 needs a GPU"):
        resolve_precision("fp16", "cpu", work=Work.train)
    with pytest.raises(ValueError):
        resolve_precision("fp8", "cpu", work=Work.train)


def test_asked_for_precisions_are_kept_on_a_cpu_with_native_bf16(native_bf16):
    native_bf16(True)
    assert resolve_precision("bf16", "cpu", work=Work.train) is B
    assert resolve_precision("fp32", "cpu", work=Work.sample) is F  # --precision fp32 stays available
    with pytest.raises(ConfigError, match="precision: fp16 needs a GPU"):
        resolve_precision("fp16", "cpu", work=Work.sample)


def test_cpu_bf16_detection_agrees_with_the_cpu_flags(monkeypatch):
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else None
    if flags is None:
        pytest.skip("no /proc/cpuinfo to compare with")
    monkeypatch.delenv(device.NATIVE_BF16_VARIABLE, raising=False)
    assert device.cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_the_native_bf16_switch_overrides_the_cpu(monkeypatch):
    for value, native in (("1", True), ("0", False)):
        monkeypatch.setenv(device.NATIVE_BF16_VARIABLE, value)
        assert device.cpu_has_native_bf16() is native
        assert device.hardware("cpu") == (Hardware.cpu_bf16 if native else Hardware.cpu)
        assert resolve_precision("auto", "cpu", work=Work.sample) == (B if native else F)
    monkeypatch.setenv(device.NATIVE_BF16_VARIABLE, "yes")
    with pytest.raises(ConfigError, match="RADD_NATIVE_BF16='yes': set it to 1 or 0"):
        device.cpu_has_native_bf16()


def test_fp32_turns_off_a_callers_autocast_and_bf16_turns_it_on():
    cpu, x = torch.device("cpu"), torch.ones(2, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (x @ x).dtype == torch.bfloat16
        with autocast(cpu, F):
            assert (x @ x).dtype == torch.float32  # the precision asked for is the one computed in
    with autocast(cpu, B):
        assert (x @ x).dtype == torch.bfloat16
