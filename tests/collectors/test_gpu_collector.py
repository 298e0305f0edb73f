"""The GPU collector against a real Prometheus holding DCGM series, and NVML agent snapshots."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from collectors import gpu
from collectors.base import CollectorError, Entity, Gpu, Scope
from collectors.models import GpuSnapshot
from incidents.models import Cluster
from tests.collectors.replay_support import (
    context,
    now_utc,
    replay,
    scenario,
    scenario_alerts,
)
from tests.support import free_port

# Every test may read GpuSnapshot rows (the collector always looks for them).
pytestmark = pytest.mark.django_db

NOW = now_utc()
MINUTE = 60.0


def node(name: str) -> Entity:
    return Entity("Node", None, name)


def by_node(drafts) -> dict:
    return {d.entity.name: d for d in drafts}


def gpus_of(draft) -> dict:
    return {g["gpu"]: g for g in draft.data["gpus"]}


def at(text: str | None) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def gpu_fault():
    """Scenario 03: GPU 3 of gpu-node-7 fell off the bus (Xid 79) 22 minutes ago."""
    loaded = scenario("03-gpu-hardware-fault")
    with replay(loaded.series(NOW), NOW) as prom:
        yield prom, scenario_alerts(loaded, NOW)


@pytest.fixture(scope="module")
def thermal():
    """Scenario 10: gpu-a10-5 overheats and its GPUs throttle; gpu-a10-2 had one corrected SBE."""
    loaded = scenario("10-gpu-thermal-throttle")
    with replay(loaded.series(NOW), NOW) as prom:
        yield prom, scenario_alerts(loaded, NOW)


def dcgm(name: str, labels: dict, values: list[float]) -> tuple:
    points = [(NOW.timestamp() - (len(values) - 1 - i) * MINUTE, v) for i, v in enumerate(values)]
    return (name, labels, points)


@pytest.fixture(scope="module")
def generated():
    """DCGM series labelled the other ways exporters do, with memory faults and a power brake."""
    fqdn = {"gpu": "0", "UUID": "GPU-aaaa", "Hostname": "gpu-x.ec2.internal", "modelName": "H100"}
    by_node_label = {"gpu": "1", "UUID": "GPU-bbbb", "Hostname": "dcgm-pod-7x", "node": "gpu-x"}
    by_k8s_label = {"gpu": "2", "UUID": "GPU-cccc", "kubernetes_node": "gpu-x"}
    by_instance = {"gpu": "3", "UUID": "GPU-dddd", "instance": "gpu-x:9400"}
    elsewhere = {"gpu": "0", "UUID": "GPU-eeee", "Hostname": "gpu-y"}
    flat = [60.0] * 60
    series = [
        dcgm("DCGM_FI_DEV_GPU_TEMP", fqdn, flat),
        dcgm("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", fqdn, [0.0] * 30 + [2.0] * 30),
        dcgm("DCGM_FI_DEV_XID_ERRORS", fqdn, [0.0] * 30 + [48.0] * 30),
        dcgm("DCGM_FI_DEV_FB_USED", fqdn, [60000.0] * 60),
        dcgm("DCGM_FI_DEV_FB_FREE", fqdn, [20000.0] * 60),
        # The newer name of the clock-event mask: HW slowdown + power brake + power cap.
        dcgm("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", by_node_label, [4.0] * 40 + [float(0x8C)] * 20),
        dcgm("DCGM_FI_DEV_GPU_TEMP", by_node_label, flat),
        dcgm("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", by_k8s_label, [1.0] * 50 + [3.0] * 10),
        dcgm("DCGM_FI_DEV_ROW_REMAP_FAILURE", by_k8s_label, [0.0] * 50 + [1.0] * 10),
        # Only power capping: a busy GPU at its limit, reported but not a problem.
        dcgm("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", by_instance, [4.0] * 60),
        dcgm("DCGM_FI_DEV_POWER_USAGE", by_instance, [699.5] * 60),
        # One GPU's series under two pods (the pod was replaced): one GPU, one merged series.
        dcgm("DCGM_FI_DEV_GPU_UTIL", {**by_instance, "pod": "old"}, [90.0] * 30),
        dcgm("DCGM_FI_DEV_GPU_UTIL", {**by_instance, "pod": "new"}, [None] * 31 + [95.0] * 29),
        dcgm("DCGM_FI_DEV_XID_ERRORS", elsewhere, [79.0] * 60),
    ]
    sampled = [
        (name, labels, [p for p in points if p[1] is not None]) for name, labels, points in series
    ]
    with replay(sampled, NOW) as prom:
        yield prom


# -- scenario 03: Xid 79 --------------------------------------------------------------------------


def test_the_xid_its_node_and_gpu_are_reported(gpu_fault):
    prom, alerts = gpu_fault
    scope = Scope(nodes=[node("gpu-node-7"), node("gpu-node-5")])
    drafts = by_node(gpu.collect(context(prom.url, scope, NOW, alerts=alerts)))
    assert set(drafts) == {"gpu-node-7", "gpu-node-5"}
    faulty = drafts["gpu-node-7"]
    assert faulty.kind == "gpu_health" and faulty.entity == node("gpu-node-7")
    assert faulty.data["source"] == "dcgm-exporter"
    gpus = gpus_of(faulty)
    bad = gpus["3"]
    assert bad["uuid"] == "GPU-4a1e7c92-3b5d-4f80-9e2c-6d8b1a3f5c73"
    assert bad["model"] == "NVIDIA A100-SXM4-80GB"
    assert bad["xid"]["code"] == 79 and "fallen off the bus" in bad["xid"]["meaning"]
    first_seen = at(bad["xid"]["first_seen"])
    assert NOW - timedelta(minutes=23) <= first_seen <= NOW - timedelta(minutes=21)
    assert bad["ecc_dbe"] == 0  # ECC is not the cause: no double-bit errors
    # Its temperature and power stopped 23 minutes ago: the GPU is gone, not just idle.
    assert bad["stale_telemetry"] is True
    assert bad["flags"] == ["xid-79", "stale-telemetry"]
    assert gpus["1"]["flags"] == [] and gpus["1"]["xid"] is None and gpus["1"]["ecc_dbe"] == 0
    assert "xid-79" in faulty.title and faulty.data["flags"] == ["stale-telemetry", "xid-79"]
    assert drafts["gpu-node-5"].data["flags"] == []


def test_a_gpu_named_by_the_scope_is_marked(gpu_fault):
    prom, _ = gpu_fault
    scope = Scope(gpus=[Gpu("gpu-node-7", index="3")])
    [draft] = gpu.collect(context(prom.url, scope, NOW))
    assert {g["gpu"]: g["in_scope"] for g in draft.data["gpus"]} == {"1": False, "3": True}
    # The chart shows the flagged GPU first.
    assert draft.data["series"][0]["labels"] == {"metric": "temperature", "gpu": "3"}
    assert all(len(s["points"]) <= 120 for s in draft.data["series"])


# -- scenario 10: thermal throttling -------------------------------------------------------------


def test_thermal_throttling_is_flagged_on_the_hot_node_only(thermal):
    prom, alerts = thermal
    scope = Scope(nodes=[node("gpu-a10-5"), node("gpu-a10-3"), node("gpu-a10-2")])
    drafts = by_node(gpu.collect(context(prom.url, scope, NOW, alerts=alerts)))
    hot = gpus_of(drafts["gpu-a10-5"])
    for index in ("0", "1"):
        assert hot[index]["throttle_reasons"] == ["SwThermalSlowdown"]
        assert hot[index]["flags"] == ["thermal"]
        assert hot[index]["temperature"]["max"] >= 90 and hot[index]["temperature"]["last"] >= 88
        seen = hot[index]["throttle_reasons_seen"][0]
        assert seen["reason"] == "SwThermalSlowdown"
        assert at(seen["first_seen"]) < NOW - timedelta(minutes=30)
    assert hot["0"]["sm_clock"] == {"last": 1095, "max": 1695}
    assert hot["2"]["flags"] == []  # warm (74 °C) but idle and not throttled
    assert drafts["gpu-a10-5"].data["flags"] == ["thermal"]
    # The other nodes: nothing flagged; a single corrected SBE is reported, not flagged.
    assert drafts["gpu-a10-3"].data["flags"] == []
    assert gpus_of(drafts["gpu-a10-3"])["2"]["temperature"]["last"] == 69
    ecc = gpus_of(drafts["gpu-a10-2"])["3"]
    assert (ecc["ecc_sbe"], ecc["ecc_sbe_increase"], ecc["ecc_dbe"]) == (1, 1, 0)
    assert ecc["flags"] == [] and drafts["gpu-a10-2"].data["flags"] == []
    assert "no problems flagged" in drafts["gpu-a10-2"].title


def test_nodes_without_gpus_give_nothing(thermal):
    prom, _ = thermal
    assert gpu.collect(context(prom.url, Scope(nodes=[node("cpu-node-1")]), NOW)) == []


# -- generated series: other labels, memory faults, clock events ---------------------------------


def test_the_node_is_matched_by_any_label_that_carries_it(generated):
    [draft] = gpu.collect(context(generated.url, Scope(nodes=[node("gpu-x")]), NOW))
    gpus = gpus_of(draft)
    assert set(gpus) == {"0", "1", "2", "3"}  # gpu-y's GPU is not gpu-x's
    assert gpus["0"]["xid"]["code"] == 48 and "double-bit" in gpus["0"]["xid"]["meaning"]
    assert gpus["0"]["ecc_dbe"] == 2 and gpus["0"]["fb_used_ratio"] == 0.75
    assert gpus["0"]["flags"] == ["xid-48", "ecc-dbe"]
    assert gpus["1"]["throttle_reasons"] == ["SwPowerCap", "HwSlowdown", "HwPowerBrakeSlowdown"]
    assert gpus["1"]["flags"] == ["hw-slowdown", "power-brake"]
    assert gpus["2"]["remapped_rows"] == 3 and gpus["2"]["remapped_rows_increase"] == 2
    assert gpus["2"]["flags"] == ["row-remap-failure", "remapped-rows"]
    assert gpus["3"]["throttle_reasons"] == ["SwPowerCap"] and gpus["3"]["power"] == 699.5
    assert gpus["3"]["flags"] == []
    assert gpus["3"]["utilization"] == 95  # the new pod's series, merged with the old one's


def test_no_nodes_in_scope_means_no_request():
    url = f"http://127.0.0.1:{free_port()}"  # would fail if asked
    assert gpu.collect(context(url, Scope(pods=[Entity("Pod", "a", "b")]), NOW)) == []


def test_an_unreachable_prometheus_is_a_collector_error():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CollectorError, match="Prometheus unreachable"):
        gpu.collect(context(url, Scope(nodes=[node("gpu-x")]), NOW, timeout=1))


def test_decoding_clock_event_reasons():
    assert gpu.decode_clock_events(0) == []
    assert gpu.decode_clock_events(0x21) == ["GpuIdle", "SwThermalSlowdown"]
    assert gpu.decode_clock_events(0xE8) == [
        "HwSlowdown",
        "SwThermalSlowdown",
        "HwThermalSlowdown",
        "HwPowerBrakeSlowdown",
    ]


# -- NVML agent snapshots -------------------------------------------------------------------------


def nvml_gpu(index: int, uuid: str, **overrides) -> dict:
    return {
        "index": index,
        "uuid": uuid,
        "name": "NVIDIA H100 80GB HBM3",
        "temperature_c": 71,
        "power_w": 512.25,
        "utilization_pct": 98,
        "memory_used_bytes": 60 * 2**30,
        "memory_total_bytes": 80 * 2**30,
        "clocks_event_reasons": ["SwPowerCap"],
        "clocks_event_reasons_mask": 4,
        "ecc_volatile_double_bit": 0,
        "ecc_volatile_single_bit": 3,
        "remapped_rows_uncorrectable": 1,
        "remapped_rows_pending": False,
        "remapped_rows_failure": False,
        "xid_events": [],
        "errors": {},
        **overrides,
    }


def snapshot(cluster: Cluster, node_name: str, taken_at: datetime, gpus: list[dict]) -> None:
    GpuSnapshot.objects.create(
        cluster=cluster, node=node_name, taken_at=taken_at, gpus=gpus, driver_version="550.54.15"
    )


@pytest.fixture
def clusters():
    return Cluster.objects.create(name="gpu-test"), Cluster.objects.create(name="elsewhere")


def test_the_latest_nvml_snapshot_is_merged_gpu_by_gpu(generated, clusters):
    mine, other = clusters
    xid_at = (NOW - timedelta(minutes=4)).isoformat()
    snapshot(mine, "gpu-x", NOW - timedelta(hours=3), [nvml_gpu(0, "GPU-old")])  # before
    snapshot(mine, "gpu-x", NOW - timedelta(minutes=10), [nvml_gpu(0, "GPU-stale")])
    snapshot(
        mine,
        "gpu-x",
        NOW - timedelta(minutes=1),
        [
            nvml_gpu(1, "GPU-bbbb", xid_events=[{"code": 94, "at": xid_at}],
                     remapped_rows_pending=True),
            nvml_gpu(7, "GPU-only-nvml", clocks_event_reasons=["SwThermalSlowdown"],
                     errors={"power": "GPU is lost"}),
        ],
    )  # fmt: skip
    snapshot(other, "gpu-x", NOW, [nvml_gpu(5, "GPU-other-cluster")])
    ctx = context(generated.url, Scope(nodes=[node("gpu-x")]), NOW, cluster="gpu-test")
    [draft] = gpu.collect(ctx)
    assert draft.data["source"] == "dcgm-exporter, nvml-agent"
    assert at(draft.data["nvml_snapshot"]["taken_at"]) == NOW - timedelta(minutes=1)
    gpus = gpus_of(draft)
    assert set(gpus) == {"0", "1", "2", "3", "7"}
    merged = gpus["1"]
    assert merged["sources"] == ["dcgm-exporter", "nvml-agent"]
    assert merged["xid"]["code"] == 94 and at(merged["xid"]["first_seen"]) == at(xid_at)
    assert merged["ecc_sbe"] == 3  # DCGM had none: filled from NVML
    assert merged["temperature"] == {"last": 60, "max": 60}  # DCGM's, kept
    assert merged["flags"] == ["xid-94", "row-remap-pending", "hw-slowdown", "power-brake"]
    only = gpus["7"]
    assert only["sources"] == ["nvml-agent"] and only["fb_used"] == 61440
    assert only["flags"] == ["thermal", "nvml-error"]
    assert gpus["0"]["sources"] == ["dcgm-exporter"]  # the snapshot had no GPU 0


def test_nvml_snapshots_are_reported_when_prometheus_is_down(clusters):
    mine, _ = clusters
    snapshot(mine, "gpu-z", NOW - timedelta(minutes=2), [nvml_gpu(0, "GPU-z")])
    url = f"http://127.0.0.1:{free_port()}"
    scope = Scope(nodes=[node("gpu-z"), node("gpu-q")])
    [draft] = gpu.collect(context(url, scope, NOW, cluster="gpu-test", timeout=1))
    assert draft.entity == node("gpu-z")
    assert draft.data["source"] == "nvml-agent"
    assert "unreachable" in draft.data["dcgm_error"]
    assert gpus_of(draft)["0"]["temperature"] == {"last": 71, "max": 71}
