"""A stand-in for `pynvml` (nvidia-ml-py) with configurable GPUs, for tests without a GPU.

Only what the agent calls, with the real binding's names, argument order and error type
(`NVMLError` carrying `.value`). State is module-level like NVML's own; `configure()` sets it
and `calls` records what was called, so tests can check init/shutdown and event-set lifetimes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15

NVML_TEMPERATURE_GPU = 0
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS = 0
NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = 1
nvmlEventTypeSingleBitEccError = 0x1
nvmlEventTypeDoubleBitEccError = 0x2
nvmlEventTypeXidCriticalError = 0x8

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_TIMEOUT: "Timeout",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
}


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML Error with code {self.value}")


@dataclass
class FakeGpu:
    """One GPU; `fail` maps an NVML function name to the error code it raises on this GPU."""

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    temperature_c: int = 45
    power_mw: int = 120_000
    power_limit_mw: int = 700_000
    utilization: tuple[int, int] = (0, 0)  # (gpu, memory) %
    memory: tuple[int, int] = (0, 80 * 2**30)  # (used, total) bytes
    clocks_event_reasons: int = 0x1
    ecc: tuple[int, int] = (0, 0)  # (double-bit, single-bit), volatile
    retired_pages: tuple[list[int], list[int]] = field(default_factory=lambda: ([], []))  # by cause
    retired_pending: int = 0
    remapped_rows: tuple[int, int, int, int] = (0, 0, 0, 0)
    event_types: int = nvmlEventTypeXidCriticalError | nvmlEventTypeDoubleBitEccError
    fail: dict[str, int] = field(default_factory=dict)


@dataclass
class _State:
    gpus: list[FakeGpu] = field(default_factory=list)
    driver: str = "550.54.15"
    cuda: int = 12040
    legacy_driver: bool = (
        False  # a driver older than 535: no nvmlDeviceGetCurrentClocksEventReasons
    )
    init_error: int | None = None
    initialized: bool = False
    events: deque = field(default_factory=deque)  # (gpu index, event type, data)
    registered: dict[int, int] = field(default_factory=dict)  # gpu index -> event mask
    event_sets: int = 0


_state = _State()
calls: list[str] = []


def configure(
    gpus: list[FakeGpu],
    *,
    driver: str = "550.54.15",
    cuda: int = 12040,
    legacy_driver: bool = False,
    init_error: int | None = None,
) -> None:
    global _state
    _state = _State(
        gpus=gpus, driver=driver, cuda=cuda, legacy_driver=legacy_driver, init_error=init_error
    )
    calls.clear()


def raise_xid(index: int, code: int) -> None:
    """The driver reports Xid `code` on GPU `index` (queued only if someone registered)."""
    if _state.registered.get(index, 0) & nvmlEventTypeXidCriticalError:
        _state.events.append((index, nvmlEventTypeXidCriticalError, code))


def _record(name: str) -> None:
    calls.append(name)
    if not _state.initialized and name not in ("nvmlInit", "nvmlShutdown"):
        raise NVMLError(NVML_ERROR_UNINITIALIZED)


def _gpu(handle: Any, function: str) -> FakeGpu:
    _record(function)
    gpu = _state.gpus[handle.index]
    if function in gpu.fail:
        raise NVMLError(gpu.fail[function])
    return gpu


def nvmlInit() -> None:
    calls.append("nvmlInit")
    if _state.init_error is not None:
        raise NVMLError(_state.init_error)
    _state.initialized = True


def nvmlShutdown() -> None:
    _record("nvmlShutdown")
    _state.initialized = False


def nvmlSystemGetDriverVersion() -> str:
    _record("nvmlSystemGetDriverVersion")
    return _state.driver


def nvmlSystemGetCudaDriverVersion() -> int:
    _record("nvmlSystemGetCudaDriverVersion")
    return _state.cuda


def nvmlDeviceGetCount() -> int:
    _record("nvmlDeviceGetCount")
    return len(_state.gpus)


def nvmlDeviceGetHandleByIndex(index: int) -> SimpleNamespace:
    _record("nvmlDeviceGetHandleByIndex")
    gpu = _state.gpus[index]
    if "nvmlDeviceGetHandleByIndex" in gpu.fail:
        raise NVMLError(gpu.fail["nvmlDeviceGetHandleByIndex"])
    return SimpleNamespace(index=index)


def nvmlDeviceGetIndex(handle: Any) -> int:
    _gpu(handle, "nvmlDeviceGetIndex")
    return handle.index


def nvmlDeviceGetName(handle: Any) -> str:
    return _gpu(handle, "nvmlDeviceGetName").name


def nvmlDeviceGetUUID(handle: Any) -> str:
    return _gpu(handle, "nvmlDeviceGetUUID").uuid


def nvmlDeviceGetTemperature(handle: Any, sensor: int) -> int:
    assert sensor == NVML_TEMPERATURE_GPU
    return _gpu(handle, "nvmlDeviceGetTemperature").temperature_c


def nvmlDeviceGetTemperatureV(handle: Any, sensor: int, version: int = 0x100000C) -> int:
    assert sensor == NVML_TEMPERATURE_GPU
    return _gpu(handle, "nvmlDeviceGetTemperatureV").temperature_c


def nvmlDeviceGetPowerUsage(handle: Any) -> int:
    return _gpu(handle, "nvmlDeviceGetPowerUsage").power_mw


def nvmlDeviceGetEnforcedPowerLimit(handle: Any) -> int:
    return _gpu(handle, "nvmlDeviceGetEnforcedPowerLimit").power_limit_mw


def nvmlDeviceGetUtilizationRates(handle: Any) -> SimpleNamespace:
    gpu_pct, memory_pct = _gpu(handle, "nvmlDeviceGetUtilizationRates").utilization
    return SimpleNamespace(gpu=gpu_pct, memory=memory_pct)


def nvmlDeviceGetMemoryInfo(handle: Any, version: Any = None) -> SimpleNamespace:
    used, total = _gpu(handle, "nvmlDeviceGetMemoryInfo").memory
    return SimpleNamespace(used=used, total=total, free=total - used)


def nvmlDeviceGetCurrentClocksEventReasons(handle: Any) -> int:
    gpu = _gpu(handle, "nvmlDeviceGetCurrentClocksEventReasons")
    if _state.legacy_driver:  # what the real binding raises when the library lacks the symbol
        raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
    return gpu.clocks_event_reasons


def nvmlDeviceGetCurrentClocksThrottleReasons(handle: Any) -> int:
    return _gpu(handle, "nvmlDeviceGetCurrentClocksThrottleReasons").clocks_event_reasons


def nvmlDeviceGetTotalEccErrors(handle: Any, error_type: int, counter_type: int) -> int:
    gpu = _gpu(handle, "nvmlDeviceGetTotalEccErrors")
    assert counter_type == NVML_VOLATILE_ECC
    double, single = gpu.ecc
    return double if error_type == NVML_MEMORY_ERROR_TYPE_UNCORRECTED else single


def nvmlDeviceGetRetiredPages(handle: Any, cause: int) -> list[int]:
    return list(_gpu(handle, "nvmlDeviceGetRetiredPages").retired_pages[cause])


def nvmlDeviceGetRetiredPagesPendingStatus(handle: Any) -> int:
    return _gpu(handle, "nvmlDeviceGetRetiredPagesPendingStatus").retired_pending


def nvmlDeviceGetRemappedRows(handle: Any) -> tuple[int, int, int, int]:
    return _gpu(handle, "nvmlDeviceGetRemappedRows").remapped_rows


def nvmlDeviceGetSupportedEventTypes(handle: Any) -> int:
    return _gpu(handle, "nvmlDeviceGetSupportedEventTypes").event_types


def nvmlEventSetCreate() -> str:
    _record("nvmlEventSetCreate")
    _state.event_sets += 1
    return "event-set"


def nvmlDeviceRegisterEvents(handle: Any, event_types: int, event_set: Any) -> None:
    gpu = _gpu(handle, "nvmlDeviceRegisterEvents")
    if event_types & ~gpu.event_types:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    _state.registered[handle.index] = _state.registered.get(handle.index, 0) | event_types


def nvmlEventSetWait_v2(event_set: Any, timeout_ms: int) -> SimpleNamespace:
    _record("nvmlEventSetWait_v2")
    if not _state.events:
        raise NVMLError(NVML_ERROR_TIMEOUT)
    index, event_type, data = _state.events.popleft()
    return SimpleNamespace(
        device=SimpleNamespace(index=index),
        eventType=event_type,
        eventData=data,
        gpuInstanceId=0xFFFFFFFF,
        computeInstanceId=0xFFFFFFFF,
    )


def nvmlEventSetFree(event_set: Any) -> None:
    _record("nvmlEventSetFree")
    _state.event_sets -= 1
    _state.registered.clear()


def open_event_sets() -> int:
    return _state.event_sets
