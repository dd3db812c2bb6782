"""The loaded rule set: playbooks in order, indexed by alertname.

Matching cost depends only on the playbooks for the alert's own name, never on how many
unrelated playbooks are loaded.
"""

from __future__ import annotations

from collections import defaultdict

from . import near_miss
from .models import Playbook
from .source import Problem


class RuleSet:
    def __init__(self, playbooks: list[Playbook], warnings: list[Problem] | None = None):
        self.playbooks = sorted(playbooks, key=lambda p: p.order)
        self.warnings = warnings or []
        self._by_alertname: dict[str, list[Playbook]] = defaultdict(list)
        # By name, the first in order (as a scan found it): a decision with a note looks its
        # playbook up, and a scan grew with unrelated playbooks (~9 us a note with 1 000).
        self._by_name: dict[str, Playbook] = {}
        for pb in self.playbooks:
            self._by_name.setdefault(pb.name, pb)
            for name in pb.alertnames:
                self._by_alertname[name].append(pb)

    def __len__(self) -> int:
        return len(self.playbooks)

    def get(self, name: str) -> Playbook | None:
        return self._by_name.get(name)

    def match(self, labels: dict[str, str], status: str) -> list[Playbook]:
        """Playbooks for this alert in order; like Alertmanager routes, the first match
        stops the search unless it says `continue: true`."""
        matched: list[Playbook] = []
        for pb in self._by_alertname.get(labels.get("alertname", ""), ()):
            if pb.matches(labels, status):
                matched.append(pb)
                if not pb.continue_:
                    break
        return matched

    def no_match_reason(self, labels: dict[str, str], status: str) -> str:
        """Why `match` found nothing for this alert, naming its near misses (near_miss.py):
        only the playbooks indexed under its alertname, those `match` tried."""
        candidates = self._by_alertname.get(labels.get("alertname", ""), ())
        return near_miss.reason(candidates, labels, status)
