"""Alertmanager webhook v4 payloads, shaped exactly as Alertmanager sends them."""

from __future__ import annotations

from typing import Any


def alert(alertname: str, status: str = "firing", starts_at: str = "2026-11-21T10:00:00Z",
          fingerprint: str | None = None, annotations: dict[str, str] | None = None,
          **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": alertname, **labels},
        "annotations": annotations or {"summary": f"{alertname} summary"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-21T11:00:00Z",
        "generatorURL": "http://prometheus.example/graph?g0.expr=up",
        "fingerprint": fingerprint if fingerprint is not None else f"fp-{alertname}-{len(labels)}",
    }


def notification(*alerts: dict[str, Any], status: str | None = None) -> dict[str, Any]:
    common = dict(alerts[0]["labels"]) if alerts else {}
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{common.get("alertname", "")}"}}',
        "truncatedAlerts": 0,
        "status": status or (alerts[0]["status"] if alerts else "firing"),
        "receiver": "remediator",
        "groupLabels": {"alertname": common.get("alertname", "")},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": list(alerts),
    }
