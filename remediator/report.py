"""Decisions as text an SRE can review at a glance (replay, history, show)."""

from __future__ import annotations

import re
from typing import Any

_MARK = {"succeeded": "✓", "planned": "·", "failed": "✗", "blocked": "⊘", "skipped": "-"}
# What a terminal takes for a command, not text: C0 and C1 controls (ESC starts CSI and OSC
# sequences, which move the cursor, erase lines, set the clipboard; 0x9b is CSI alone; CR
# writes over the line), DEL, and the marks that reorder what follows them (U+202E).
_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_COMMANDS = re.compile(f"[{_CONTROLS}]")
_COMMANDS_OR_LINES = re.compile(f"[{_CONTROLS}\t\n]")


def terminal_text(text: str, lines: bool = False) -> str:
    """`text` as a terminal shows it, every control written as Python escapes it (`\\x1b`):
    alert labels and annotations reach an operator's terminal (history, show, replay) from
    whoever can push an alert. `lines`: its tabs and newlines are its own (a note)."""
    return (_COMMANDS if lines else _COMMANDS_OR_LINES).sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if (short := _SHORT.get(char)) is not None:
        return short
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def decision_text(d: dict[str, Any]) -> str:
    labels = d["alert"]["labels"] if d.get("alert") else {}
    shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname")
    lines = [f"{d['alertname']} ({d['status']}) {{{shown}}}"]
    if not d.get("playbook"):
        lines.append(f"  → {d['outcome']}: {d.get('reason', '')}")
        return "\n".join(map(terminal_text, lines))
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
        if s.get("detail"):  # a multi-line one (a `when:`, stderr) stays under its step
            lines += ["       " + line for line in s["detail"].splitlines()]
    esc = d.get("escalation")
    if esc:
        within = esc.get("respond_within_seconds")
        where = ", ".join(f"{k}: {v}" for k, v in esc.get("deliveries", {}).items()) or \
            "not delivered (dry-run)"
        lines.append(f"  escalation {esc['severity']}"
                     + (f", respond within {within / 60:g} min" if within else "")
                     + f" — {where}")
    return "\n".join(map(terminal_text, lines))  # each line ours, whatever its values hold


ALERT_WIDTH = 64  # an alert name longer than this is cut, so one cannot push the rest away


def history_text(decisions: list[dict[str, Any]]) -> str:
    """One row a decision, columns as wide as what they hold: a timestamp's microseconds
    or an alert name such as ThreeDPotDatabaseConnectionFailed are shown whole (and what
    an alert's sender wrote, escaped: `terminal_text`)."""
    rows = [(d["id"], d["created_at"], d["outcome"],
             terminal_text(d["alertname"])[:ALERT_WIDTH], d.get("playbook") or "-")
            for d in decisions]
    table = [("ID", "CREATED", "OUTCOME", "ALERT", "PLAYBOOK"), *rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(4)]  # the last is not padded
    return "\n".join("  ".join([*(f"{row[i]!s:<{widths[i]}}" for i in range(4)), str(row[4])])
                     for row in table)
