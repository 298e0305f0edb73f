"""Demo alerts: realistic Alertmanager v4 notifications from an LLM-serving cluster.

`make run` posts these through the real webhook, so a newcomer's first incidents took the same
path as production ones.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

GO_ZERO_TIME = "0001-01-01T00:00:00Z"


def fingerprint(labels: dict[str, str]) -> str:
    """Stable 16-hex-digit id of a label set, in the spirit of Alertmanager's."""
    text = "\xff".join(f"{k}\xff{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def alert(
    labels: dict[str, str],
    annotations: dict[str, str],
    starts_at: datetime,
    ends_at: datetime | None = None,
    expr: str = "",
) -> dict:
    return {
        "status": "resolved" if ends_at else "firing",
        "labels": labels,
        "annotations": annotations,
        "startsAt": starts_at.isoformat().replace("+00:00", "Z"),
        "endsAt": ends_at.isoformat().replace("+00:00", "Z") if ends_at else GO_ZERO_TIME,
        "generatorURL": f"http://prometheus:9090/graph?g0.expr={expr}&g0.tab=1" if expr else "",
        "fingerprint": fingerprint(labels),
    }


def notification(group_labels: dict[str, str], alerts: list[dict], route: str = "{}") -> dict:
    """Wrap alerts as Alertmanager does: groupKey, common labels and annotations, status."""
    common = dict(set.intersection(*(set(a["labels"].items()) for a in alerts)))
    common_annotations = dict(set.intersection(*(set(a["annotations"].items()) for a in alerts)))
    group = ", ".join(f'{k}="{v}"' for k, v in sorted(group_labels.items()))
    return {
        "version": "4",
        "groupKey": f"{route}:{{{group}}}",
        "truncatedAlerts": 0,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": "vigil",
        "groupLabels": group_labels,
        "commonLabels": common,
        "commonAnnotations": common_annotations,
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    }


def demo_notifications(now: datetime | None = None) -> list[dict]:
    now = now or datetime.now(UTC)
    kv = {
        "alertname": "VLLMKVCacheNearlyFull",
        "namespace": "llm-serving",
        "service": "vllm-llama-70b",
        "model_name": "meta-llama/Llama-3.1-70B-Instruct",
        "severity": "warning",
    }
    ttft = {
        "alertname": "VLLMTimeToFirstTokenHigh",
        "namespace": "llm-serving",
        "service": "vllm-llama-70b",
        "model_name": "meta-llama/Llama-3.1-70B-Instruct",
        "severity": "critical",
    }
    xid = {
        "alertname": "GPUXidError",
        "node": "gpu-node-3",
        "gpu": "2",
        "UUID": "GPU-8f1e2a9c-41d3-4c55-9a0b-6c2d1e7f3a10",
        "Hostname": "gpu-node-3",
        "severity": "critical",
    }
    crash = {
        "alertname": "KubePodCrashLooping",
        "namespace": "embeddings",
        "pod": "embedder-7c9f8d6b5-x2k4q",
        "container": "embedder",
        "service": "embedder",
        "severity": "warning",
    }
    disk = {
        "alertname": "NodeFilesystemAlmostFull",
        "node": "cpu-node-1",
        "mountpoint": "/var/lib/containerd",
        "severity": "warning",
    }
    return [
        notification(
            {"alertname": "VLLMKVCacheNearlyFull", "namespace": "llm-serving"},
            [
                alert(
                    kv,
                    {
                        "summary": "vLLM KV cache above 95% on vllm-llama-70b",
                        "description": "gpu_cache_usage_perc has been above 0.95 for 5 minutes; requests queue.",
                    },
                    now - timedelta(minutes=12),
                    expr="vllm:gpu_cache_usage_perc > 0.95",
                ),
            ],
        ),
        notification(
            {"alertname": "VLLMTimeToFirstTokenHigh", "namespace": "llm-serving"},
            [
                alert(
                    ttft,
                    {"summary": "p95 time to first token above 2s on vllm-llama-70b"},
                    now - timedelta(minutes=9),
                    expr="histogram_quantile(0.95, rate(vllm:time_to_first_token_seconds_bucket[5m])) > 2",
                ),
            ],
        ),
        notification(
            {"alertname": "GPUXidError", "node": "gpu-node-3"},
            [
                alert(
                    xid,
                    {
                        "summary": "GPU 2 on gpu-node-3 reported Xid 79 (fallen off the bus)",
                        "runbook_url": "https://docs.nvidia.com/deploy/xid-errors/",
                    },
                    now - timedelta(minutes=4),
                    expr="DCGM_FI_DEV_XID_ERRORS > 0",
                ),
            ],
        ),
        notification(
            {"alertname": "KubePodCrashLooping", "namespace": "embeddings"},
            [
                alert(
                    crash,
                    {"summary": "embedder-7c9f8d6b5-x2k4q is crash looping (OOMKilled)"},
                    now - timedelta(minutes=30),
                    expr="increase(kube_pod_container_status_restarts_total[10m]) > 3",
                ),
            ],
        ),
        notification(
            {"alertname": "NodeFilesystemAlmostFull", "node": "cpu-node-1"},
            [
                alert(
                    disk,
                    {"summary": "cpu-node-1 /var/lib/containerd is 92% full"},
                    now - timedelta(hours=2),
                    ends_at=now - timedelta(minutes=20),
                    expr="node_filesystem_avail_bytes / node_filesystem_size_bytes < 0.1",
                ),
            ],
        ),
    ]
