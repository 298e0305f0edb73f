"""The unified timeline: every collector's piece of the story, in time order, pointing at evidence."""

from __future__ import annotations

from datetime import UTC, datetime

from assistant.base import AlertItem, EvidenceItem, Facts
from assistant.timeline import build_timeline
from collectors.base import Entity, Scope

CHAT = Entity("Deployment", "llm", "chat-api")
NODE = Entity("Node", None, "gpu-node-7")


def at(minute: int) -> str:
    return f"2026-11-23T10:{minute:02d}:00Z"


def test_entries_from_every_collector_are_merged_in_time_order():
    evidence = [
        EvidenceItem(
            1,
            "deploys",
            "deploys",
            "ok",
            "",
            CHAT,
            {"changes": [{"source": "ci", "at": at(5), "version": "v2"}]},
        ),
        EvidenceItem(
            2,
            "kubernetes",
            "k8s_events",
            "ok",
            "",
            CHAT,
            {
                "events": [
                    {
                        "type": "Warning",
                        "reason": "BackOff",
                        "kind": "Pod",
                        "name": "p",
                        "message": "restarting",
                        "first": at(9),
                    },
                    {
                        "type": "Normal",
                        "reason": "Pulled",
                        "kind": "Pod",
                        "name": "p",
                        "message": "pulled",
                        "first": at(6),
                    },
                ]
            },
        ),
        EvidenceItem(
            3,
            "prometheus",
            "metric",
            "ok",
            "HTTP 5xx share — Deployment llm/chat-api",
            CHAT,
            {"series": [{"summary": {"step_at": at(7), "step_direction": "up"}}]},
        ),
        EvidenceItem(
            4,
            "logs",
            "log_signatures",
            "ok",
            "",
            None,
            {
                "pod": "p",
                "signatures": [
                    {"level": "error", "count": 3, "signature": "TypeError: x", "first": at(8)},
                    {"level": "warning", "count": 9, "signature": "slow", "first": at(1)},
                ],
            },
        ),
        EvidenceItem(
            5,
            "gpu",
            "gpu_health",
            "ok",
            "",
            NODE,
            {
                "gpus": [
                    {
                        "gpu": "3",
                        "xid": {"code": 79, "first_seen": at(2)},
                        "throttle_reasons_seen": [{"reason": "SwPowerCap", "first_seen": at(1)}],
                    }
                ]
            },
        ),
        EvidenceItem(6, "prometheus", "source_error", "failed", "down", None, {}),
    ]
    alert = AlertItem(
        {"alertname": "HighErrors"}, {}, datetime(2026, 11, 23, 10, 10, tzinfo=UTC), None, "firing"
    )
    story = build_timeline(Facts(1, alert.starts_at, [alert], Scope(), evidence))
    assert [(e.at.minute, e.kind, e.evidence_id) for e in story] == [
        (2, "gpu", 5),
        (5, "change", 1),
        (7, "metric-step", 3),
        (8, "log", 4),
        (9, "event", 2),
        (10, "alert", None),
    ]
    assert story[0].title == "Node gpu-node-7 GPU 3: Xid 79"
    assert story[2].title == "HTTP 5xx share stepped up"
