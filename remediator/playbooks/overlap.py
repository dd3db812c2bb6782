"""Checks across the whole rule set: duplicate playbook names, and playbooks an earlier one
shadows (it matches every alert they could, first, without `continue`)."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from .matchers import Matcher
from .models import Playbook

if TYPE_CHECKING:
    from .validate import Validation

# The alerts a playbook sees, by its `match.status` (a firing playbook sees its resolution).
_SEES = {"firing": {"firing", "resolved"}, "any": {"firing", "resolved"}, "resolved": {"resolved"}}


def check_across(result: Validation) -> None:
    """Duplicate names and shadowed playbooks: problems only visible across the whole set."""
    seen: dict[str, Playbook] = {}
    by_alertname: dict[str, list[Playbook]] = defaultdict(list)
    for pb in result.playbooks:
        if pb.name in seen:
            result.problems.append(result.problem_at(
                pb, ("name",), "error",
                f"duplicate playbook name {pb.name!r} (first at {_origin(result, seen[pb.name])})"))
        seen.setdefault(pb.name, pb)
        # Only playbooks that share an alertname can shadow each other.
        candidates = {p.order: p for name in pb.alertnames for p in by_alertname[name]}
        for earlier in sorted(candidates.values(), key=lambda p: p.order):
            if _shadows(earlier, pb):
                result.problems.append(result.problem_at(
                    pb, ("match",), "error",
                    f"playbook {pb.name!r} can never match: {earlier.name!r} "
                    f"({_origin(result, earlier)}) matches the same alerts first and has no "
                    "`continue: true`" + _resolutions_hint(earlier, pb)))
                break
        for name in pb.alertnames:
            by_alertname[name].append(pb)


def _resolutions_hint(first: Playbook, later: Playbook) -> str:
    """Why a resolved-only playbook is shadowed by one that looks like it only fires."""
    if later.status != "resolved" or first.status == "resolved":
        return ""
    if first.status == "any":
        return f"; {first.name!r} (status: any) runs its steps on resolutions too"
    return (f"; a firing playbook also receives its alerts' resolutions and runs its "
            f"`on_resolved` steps then: move these steps into the `on_resolved` of "
            f"{first.name!r} (they run once its firing run has stopped), or give it "
            "`continue: true`")


def _origin(result: Validation, pb: Playbook) -> str:
    source, at = result.origins[pb.order]
    return f"{pb.file}:{source.where(at)[0]}"


def _shadows(first: Playbook, later: Playbook) -> bool:
    """Does `first` (without `continue`) match every alert `later` could match?"""
    if first.continue_ or not set(later.alertnames) <= set(first.alertnames):
        return False
    if not _SEES[later.status] <= _SEES[first.status]:
        return False
    return all(_implied(m, later.matchers) for m in first.matchers)


def _implied(matcher: Matcher, given: tuple[Matcher, ...]) -> bool:
    """Is `matcher` true for every label set that satisfies all of `given`?"""
    for g in given:
        if g.name != matcher.name:
            continue
        if (g.op, g.value) == (matcher.op, matcher.value):
            return True
        if g.op == "=" and matcher.matches({g.name: g.value}):
            return True  # `given` pins the label to one value, and that value passes
    return False
