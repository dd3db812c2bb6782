"""Decisions as text an SRE can review at a glance (replay, history, show)."""

from __future__ import annotations

from typing import Any

_MARK = {"succeeded": "✓", "planned": "·", "failed": "✗", "blocked": "⊘", "skipped": "-"}


def decision_text(d: dict[str, Any]) -> str:
    labels = d["alert"]["labels"] if d.get("alert") else {}
    shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname")
    lines = [f"{d['alertname']} ({d['status']}) {{{shown}}}"]
    if not d.get("playbook"):
        lines.append(f"  → {d['outcome']}: {d.get('reason', '')}")
        return "\n".join(lines)
    lines.append(f"  playbook {d['playbook']} [{d.get('mode')}] → {d['outcome'].upper()}"
                 + (f": {d['reason']}" if d.get("reason") else ""))
    if d.get("target"):
        lines.append(f"  target   {d['target']}")
    lines.append(f"  id       {d['id']}")
    for i, s in enumerate(d.get("steps") or [], 1):
        mark = _MARK.get(s["outcome"], "?")
        flag = " (mutating)" if s.get("mutating") else ""
        took = f" [{s['duration_seconds']:.2f}s]" if s.get("duration_seconds") else ""
        lines.append(f"  {mark} {i}. {s['name']} — {s['action']}{flag}: {s['outcome']}{took}")
        if s.get("detail"):
            lines.append(f"       {s['detail']}")
    esc = d.get("escalation")
    if esc:
        within = esc.get("respond_within_seconds")
        where = ", ".join(f"{k}: {v}" for k, v in esc.get("deliveries", {}).items()) or \
            "not delivered (dry-run)"
        lines.append(f"  escalation {esc['severity']}"
                     + (f", respond within {within / 60:g} min" if within else "")
                     + f" — {where}")
    return "\n".join(lines)


def history_text(decisions: list[dict[str, Any]]) -> str:
    rows = [f"{'ID':<20}  {'CREATED':<24}  {'OUTCOME':<10}  {'ALERT':<28}  PLAYBOOK"]
    rows += [f"{d['id']:<20}  {d['created_at']:<24}  {d['outcome']:<10}  "
             f"{d['alertname'][:28]:<28}  {d.get('playbook') or '-'}" for d in decisions]
    return "\n".join(rows)
