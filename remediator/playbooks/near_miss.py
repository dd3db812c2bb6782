"""Why no playbook matched an alert: the near misses a `no_match` decision's reason names.

An on-call engineer asking "why wasn't this acted on?" needs the playbook that was meant to
act and the matcher that refused, not "no playbook matches". Only the playbooks indexed
under the alert's own alertname are looked at (the ones `RuleSet.match` tried), so this
costs what matching cost, never a scan of unrelated playbooks.

Label values are the sender's, and the reason is logged, stored and shown: each value is
redacted, then quoted with JSON escapes (one line, ASCII: no control or bidi character survives) and cut
to `SHOWN` characters; at most `NAMED` playbooks are named, the rest counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from json.encoder import encode_basestring_ascii as _quote  # json.dumps(str), without its setup

from .. import redact
from .models import Playbook

NAMED = 3
SHOWN = 64
PREFIX = "no playbook matches this alert"


def quoted(value: str, *, filtered: bool = True) -> str:
    """An untrusted label value as a bounded, one-line, double-quoted string. `filtered=False`
    for the alertname: see `reason`."""
    # Redacted whole, before it is cut or escaped: the reason's own redaction would miss a
    # secret cut short (a URL's password before its `@`) or escaped (a quote in it). With
    # the filter exec output goes through too (`password=`, a bearer token, a JWT), for a
    # label value reaches the log line and every API answer: imported here, at a no_match
    # only, as start-up loads none of it.
    value = redact.text(value)
    if filtered:
        from ..actions import secret_text
        value = secret_text.output(value)
    if len(value) <= SHOWN:
        return _quote(value)
    return f"{_quote(value[:SHOWN])}… ({len(value)} characters)"


def reason(candidates: Sequence[Playbook], labels: dict[str, str], status: str) -> str:
    """The reason of a `no_match`: `candidates` are the playbooks indexed under the alert's
    alertname (none matched), each named with what refused it."""
    if not candidates:
        # The alertname is the decision's own name, shown as sent in its `alertname` (history,
        # show, the API, the console): the filter here hid nothing, and a name it took for a
        # key (ForgeS3UploadFailureHigh) made the reason say nothing. Only remediator's own
        # secrets are redacted, as in the whole record.
        name = quoted(labels.get("alertname", ""), filtered=False)
        return f"{PREFIX}: none handles alertname={name}"
    named = [f"{pb.name}: {refusal(pb, labels, status)}" for pb in candidates[:NAMED]]
    if len(candidates) > NAMED:
        named.append(f"and {len(candidates) - NAMED} more")
    return f"{PREFIX}: " + "; ".join(named)


def refusal(pb: Playbook, labels: dict[str, str], status: str) -> str:
    """What refused `pb` for these labels: its first matcher that does not match (as
    Alertmanager writes it, against the alert's label), else its status."""
    for matcher in pb.matchers:
        if not matcher.matches(labels):
            actual = labels.get(matcher.name)
            if actual is None:  # matched as "", as Alertmanager does
                return f"{matcher} does not match: the alert has no {matcher.name} label"
            return f"{matcher} does not match {matcher.name}={quoted(actual)}"
    if pb.status == "resolved" and status == "firing":
        return "it handles only the alert's resolution, and this alert is firing"
    return "matches"  # not reached for a no_match: the playbook would have matched
