"""Escalation notes: content worth reading, delivered to real HTTP receivers and a real
Alertmanager, and a sink that is down then up receives the note exactly once."""

from __future__ import annotations

import asyncio
import json
import re
import textwrap
import time

import aiohttp
import yaml

from remediator.actions.base import ActionError
from remediator.alerts import parse_notification
from remediator.config import Config
from remediator.engine.executor import Executor
from remediator.escalation import build_sink
from remediator.service import Service
from tests.deploy.test_alertmanager_config import CONFIG as SHIPPED_AM_CONFIG
from tests.integration.test_guards import Harness, web
from tests.support.alertmanager import webhook_config
from tests.support.payloads import alert, notification
from tests.support.webhook import WebhookReceiver
from tests.support.worker import loopback_guards

RULES = """
playbooks:
  - name: code-forge-s3-upload-failure
    runbook: https://runbooks.example/code-forge#upload
    match: {alertname: CodeForgeS3UploadFailureHigh}
    target: {kind: deployment, namespace: "{{ labels.namespace }}", name: code-forge}
    guards: {cooldown: 10m}
    steps:
      - name: logs
        action: http.request
        params: {url: "http://127.0.0.1:9/logs"}
      - name: restart
        action: http.request
        params: {url: "http://127.0.0.1:9/restart", method: POST}
    escalation:
      severity: critical
      respond_within: 15m
      owner: "#code-forge-team ({{ labels.namespace }})"
      team: code-forge-team
      summary: "S3 uploads failing for {{ target }}"
      sinks: %(sinks)s
      next_steps:
        - "kubectl exec -it deploy/code-forge -n neural-hive-pipeline -- aws sts get-caller-identity"
        - "aws s3api get-bucket-policy --bucket code-forge-artifacts-prod"
"""


def _service(tmp, sinks: dict, names: list[str], store: str = "sqlite://") -> Service:
    rules = tmp / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "cf.yaml").write_text(textwrap.dedent(RULES % {"sinks": json.dumps(names)}))

    async def runner(action, params, ctx):
        if params["method"] == "POST":
            raise ActionError("restart refused: deployments.apps is forbidden", {"status": 403},
                              unapplied=True)  # refused outright: nothing was changed
        return {"status": 200, "lines": ["ERROR s3 upload failed: ExpiredToken"]}

    cfg = Config(rules=[str(rules)], store=store, mode="live", escalation_dir=str(tmp / "notes"),
                 escalation_sinks=sinks, guards=loopback_guards())
    return Service(cfg, executor=Executor(runner=runner, retry_wait=0))


def _fire(service: Service) -> dict:
    async def go() -> dict:
        await service.start(dispatch=False)
        await service.intake(parse_notification(json.dumps(notification(alert(
            "CodeForgeS3UploadFailureHigh", namespace="neural-hive-pipeline", severity="critical",
            annotations={"summary": "upload failure ratio 12%"}))).encode()))
        [decision] = await service.drain()
        return decision
    return asyncio.new_event_loop().run_until_complete(go())


def test_note_has_what_a_human_needs_and_reaches_webhook_and_slack(tmp_path, webhook_receiver):
    slack = WebhookReceiver().start()
    try:
        sinks = {"hook": {"type": "webhook", "url": webhook_receiver.url},
                 "chat": {"type": "slack", "url": slack.url}}
        decision = _fire(_service(tmp_path, sinks, ["files", "hook", "chat"]))
        assert decision["outcome"] == "failed"
        assert set(decision["escalation"]["deliveries"]) == {"files", "hook", "chat"}
        note = (tmp_path / "notes" / f"{decision['id']}.md").read_text()
        for expected in ("# [CRITICAL] CodeForgeS3UploadFailureHigh: S3 uploads failing for "
                         "neural-hive-pipeline/deployment/code-forge — failed at step 'restart', "
                         "nothing was changed\n",
                         "**Respond within:** 15 min", "**Owner:** #code-forge-team (neural-hive-pipeline)",
                         "https://runbooks.example/code-forge#upload", "`namespace=neural-hive-pipeline`",
                         "`logs` (http.request): **succeeded**", "`restart` (http.request): **failed**",
                         "ExpiredToken", "restart refused: deployments.apps is forbidden",
                         "aws sts get-caller-identity", "## Next steps"):
            assert expected in note, expected
        body = webhook_receiver.wait_for().body
        assert body["id"] == decision["id"] and body["severity"] == "critical"
        assert body["markdown"] == note
        assert slack.wait_for().body["text"].startswith("# [CRITICAL] CodeForgeS3UploadFailureHigh")
    finally:
        slack.stop()


def test_alertmanager_sink_pages_through_existing_routing(tmp_path, alertmanager_factory):
    receiver = WebhookReceiver().start()
    try:
        am = alertmanager_factory(webhook_config(receiver.url))
        decision = _fire(_service(tmp_path, {"am": {"type": "alertmanager", "url": am.url}}, ["am"]))
        assert decision["escalation"]["deliveries"]["am"].startswith("delivered")
        [page] = am.alerts(alertname="RemediationEscalation")
        assert page["labels"]["original_alertname"] == "CodeForgeS3UploadFailureHigh"
        assert page["labels"]["severity"] == "critical" and page["labels"]["execution_id"] == decision["id"]
        assert page["labels"]["namespace"] == "neural-hive-pipeline"
        delivered = receiver.wait_for(lambda d: any(
            a["labels"]["alertname"] == "RemediationEscalation" for a in d.body["alerts"]))
        assert "S3 uploads failing" in delivered.body["alerts"][0]["annotations"]["summary"]
    finally:
        receiver.stop()


def test_alertmanager_sink_is_idempotent_a_repeated_note_pages_once(alertmanager_factory):
    """The same note twice (as after a crash between delivery and record): one alert in
    Alertmanager, one notification."""
    receiver = WebhookReceiver().start()
    try:
        am = alertmanager_factory(webhook_config(receiver.url, group_by=["..."]))
        sink = build_sink("am", {"type": "alertmanager", "url": am.url})
        note = {"id": "e1", "alertname": "WebDown", "playbook": "restart-web", "severity": "critical",
                "labels": {"namespace": "prod"}, "title": "t", "markdown": "m", "outcome": "failed",
                "reason": "r"}

        async def deliver_twice() -> None:
            async with aiohttp.ClientSession() as session:
                await sink.deliver(note, session)
                receiver.wait_for()  # notified once...
                await sink.deliver(note, session)  # ...and the repeat arrives after that

        asyncio.new_event_loop().run_until_complete(deliver_twice())
        [page] = am.alerts(alertname="RemediationEscalation")
        assert page["labels"]["execution_id"] == "e1"
        time.sleep(1.0)  # ten group intervals: a second notification would have gone out
        assert len(receiver.deliveries) == 1
    finally:
        receiver.stop()


def test_a_critical_note_reaches_its_team_through_the_shipped_alertmanager_routes(
        tmp_path, alertmanager_factory):
    """The shipped routing tree, unchanged, in a real Alertmanager; only the receivers' Slack
    integrations are swapped for a local endpoint per receiver, so the path tells who got it."""
    receiver = WebhookReceiver().start()
    try:
        shipped = yaml.safe_load(SHIPPED_AM_CONFIG.read_text())
        base = receiver.url.rsplit("/", 1)[0]
        config = {"route": shipped["route"], "receivers": [
            {"name": r["name"], "webhook_configs": [{"url": f"{base}/{r['name']}"}]}
            for r in shipped["receivers"]]}
        am = alertmanager_factory(yaml.safe_dump(config))
        decision = _fire(_service(tmp_path, {"am": {"type": "alertmanager", "url": am.url}}, ["am"]))
        assert decision["escalation"]["team"] == "code-forge-team"
        [page] = am.alerts(alertname="RemediationEscalation")
        assert {k: page["labels"][k] for k in ("team", "severity", "respond_within")} == {
            "team": "code-forge-team", "severity": "critical", "respond_within": "15m"}
        delivered = receiver.wait_for(lambda d: any(
            a["labels"]["alertname"] == "RemediationEscalation" for a in d.body["alerts"]))
        assert delivered.path == "/code-forge-team"
        assert delivered.body["receiver"] == "code-forge-team"
        assert "**Team:** `code-forge-team`" in delivered.body["alerts"][0]["annotations"][
            "description"]
        time.sleep(1)  # nobody else is paged for it (group_wait 0s: it would be there by now)
        assert {d.path for d in receiver.deliveries} == {"/code-forge-team"}
    finally:
        receiver.stop()


def test_sink_down_then_up_gets_the_note_exactly_once_even_across_a_restart(tmp_path, webhook_receiver):
    webhook_receiver.status = 503
    sinks = {"hook": {"type": "webhook", "url": webhook_receiver.url}}
    store = f"sqlite:///{tmp_path}/spool.db"
    loop = asyncio.new_event_loop()

    async def while_down() -> None:
        first = _service(tmp_path, sinks, ["hook"], store)
        await first.start(dispatch=False)
        first.engine.escalator.retry_wait = 0
        await first.intake(parse_notification(json.dumps(notification(alert(
            "CodeForgeS3UploadFailureHigh", namespace="neural-hive-pipeline"))).encode()))
        [decision] = await first.drain()
        assert decision["escalation"]["deliveries"] == {"hook": "spooled"}
        assert await first.engine.escalator.redeliver() == 1  # still down: kept
        await first.stop()

    async def after_restart() -> None:
        second = _service(tmp_path, sinks, ["hook"], store)
        await second.start(dispatch=False)
        assert await second.engine.escalator.redeliver() == 0
        assert await second.engine.escalator.redeliver() == 0  # nothing left to send twice
        assert await second.store.list_state("spool:") == {}
        await second.stop()

    loop.run_until_complete(while_down())
    refused = len(webhook_receiver.deliveries)
    assert refused == 4  # 3 attempts with backoff, then one redelivery while still down
    webhook_receiver.status = 200
    loop.run_until_complete(after_restart())
    assert len(webhook_receiver.deliveries) == refused + 1  # arrived once
    assert webhook_receiver.deliveries[-1].body["alertname"] == "CodeForgeS3UploadFailureHigh"


def test_note_titles_state_the_outcome_not_a_fix_that_did_not_happen(tmp_path, run):
    h = run(Harness(tmp_path, "{cooldown: 10m}", always=True).start())
    [fixed] = run(h.fire(web(0)))
    [cooling] = run(h.fire(web(1), at=60))
    assert (fixed["outcome"], cooling["outcome"]) == ("escalated", "blocked")
    titles = {d["outcome"]: d["escalation"]["title"] for d in (fixed, cooling)}
    assert titles == {"escalated": "[CRITICAL] WebDown: WebDown summary — escalated after restart",
                      "blocked": "[CRITICAL] WebDown: WebDown summary — blocked by cooldown, "
                                 "nothing was changed"}
    assert len(h.calls) == 1
    run(h.service.stop())


def test_a_note_the_sink_refuses_is_surfaced_not_retried_forever(tmp_path, webhook_receiver, caplog):
    webhook_receiver.status = 400  # the receiver judges this very note: retrying cannot help
    service = _service(tmp_path, {"hook": {"type": "webhook", "url": webhook_receiver.url}},
                       ["hook"])
    decision = _fire(service)
    assert decision["escalation"]["deliveries"]["hook"].startswith("undeliverable: NoteRefused")
    assert len(webhook_receiver.deliveries) == 1  # tried once, not three times, not spooled
    assert asyncio.new_event_loop().run_until_complete(service.store.list_state("spool:")) == {}
    assert service.metrics.registry.get_sample_value(
        "remediator_escalations_total", {"sink": "hook", "outcome": "undeliverable"}) == 1
    assert any(r.levelname == "ERROR" and "cannot be delivered to hook" in r.getMessage()
               for r in caplog.records)


HOSTILE_STRINGS = {"nul": "a\x00b", "separators": "\u2028\u2029\x85", "rtl": "\u202etxt.exe",
               "noncharacters": "\ufffe\uffff", "astral": "\U0001f525\U000e0001", "long": "é" * 8192,
               "quotes": "\"'`\\", "markdown": "**x** `y` [z](javascript:alert(1))"}


def _fire_hostile(service: Service, **labels: str) -> dict:
    async def go() -> dict:
        await service.start(dispatch=False)
        body = json.dumps(notification(alert("CodeForgeS3UploadFailureHigh",
                                             namespace="neural-hive-pipeline", **labels)))
        await service.intake(parse_notification(body.encode()))
        [decision] = await service.drain()
        await service.stop()
        return decision
    return asyncio.new_event_loop().run_until_complete(go())


def test_every_sink_writes_every_string_intake_accepts(tmp_path, webhook_receiver):
    hostile = HOSTILE_STRINGS
    slack = WebhookReceiver().start()
    try:
        sinks = {"hook": {"type": "webhook", "url": webhook_receiver.url},
                 "chat": {"type": "slack", "url": slack.url}}
        decision = _fire_hostile(_service(tmp_path, sinks, ["files", "hook", "chat"]), **hostile)
        deliveries = decision["escalation"]["deliveries"]
        assert all(v.startswith("delivered") for v in deliveries.values()), deliveries
        assert webhook_receiver.wait_for().body["labels"] == {
            "alertname": "CodeForgeS3UploadFailureHigh", "namespace": "neural-hive-pipeline",
            **hostile}
        assert "\u202etxt.exe" in (tmp_path / "notes" / f"{decision['id']}.md").read_text()
        slack.wait_for()
    finally:
        slack.stop()


def test_a_label_cannot_mention_a_slack_channel_or_disguise_a_link(tmp_path):
    # Slack reads `<...>` in a message's text as its own markup: `<!channel>` pages everyone
    # in the channel, `<@U...>` one person, `<https://x|text>` a link that shows only its
    # text; it asks senders to escape &, < and > in what is text (api.slack.com, "Formatting
    # text for app surfaces"). The note quotes labels whoever pushes the alert wrote.
    slack = WebhookReceiver().start()
    try:
        sinks = {"chat": {"type": "slack", "url": slack.url}}
        _fire_hostile(_service(tmp_path, sinks, ["chat"]), everyone="<!channel> <!here|here>",
                      person="<@U024BE7LH>", link="<https://evil.example/approve|Approve the fix>",
                      amp="a &amp; b")
        text = slack.wait_for().body["text"]
    finally:
        slack.stop()
    assert text.startswith("# [CRITICAL] CodeForgeS3UploadFailureHigh")
    assert "<" not in text and ">" not in text, text
    for shown in ("everyone=&lt;!channel&gt; &lt;!here|here&gt;", "person=&lt;@U024BE7LH&gt;",
                  "link=&lt;https://evil.example/approve|Approve the fix&gt;", "amp=a &amp;amp; b"):
        assert shown in text, shown


def test_a_failed_note_write_leaves_no_temporary_file(tmp_path):
    from remediator.escalation.sinks import DirectorySink, NoteRefused, SinkError
    sink = DirectorySink("files", str(tmp_path))
    (tmp_path / "blocked.md").mkdir()  # the note's path is taken by a directory: replace fails
    loop = asyncio.new_event_loop()
    for note_id, text, error in (("blocked", "note", SinkError), ("bad", "\ud800", NoteRefused)):
        try:
            loop.run_until_complete(sink.deliver({"id": note_id, "markdown": text}, None))
        except error:
            pass
        else:
            raise AssertionError(f"{note_id}: delivered")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked.md"]


def test_the_alertmanager_sink_carries_any_accepted_label(tmp_path, alertmanager_factory):
    receiver = WebhookReceiver().start()
    try:
        am = alertmanager_factory(webhook_config(receiver.url))
        # the sink copies `instance` into its page
        instance = "".join(v for k, v in HOSTILE_STRINGS.items() if k != "long")
        decision = _fire_hostile(_service(tmp_path, {"am": {"type": "alertmanager", "url": am.url}},
                                          ["am"]), instance=instance)
        assert decision["escalation"]["deliveries"]["am"].startswith("delivered")
        [page] = am.alerts(alertname="RemediationEscalation")
        assert page["labels"]["instance"] == instance
    finally:
        receiver.stop()


MARKUP_RULES = """
playbooks:
  - name: web-down
    match: {alertname: WebDown}
    steps:
      - {name: probe, action: http.request, params: {url: "http://127.0.0.1:9/probe"}}
    escalation:
      severity: critical
      owner: "**web team** ({{ labels.team }})"
      summary: "web down in {{ labels.namespace }}: {{ labels.title }}"
      next_steps:
        - "{{ labels.step }}"
        - "Read [the runbook](https://runbooks.example/web), then
           `kubectl -n {{ labels.namespace }} get pods`"
"""
LINK = "[click me](https://evil.example/label)"
SECRET = "-s3cr*t[token]"  # punctuation Markdown escapes
PIXEL = "![x](https://tracker.example/pixel.png)"


def test_labels_in_a_note_are_text_never_links_images_or_headings(tmp_path, webhook_receiver):
    """Labels are whatever a scraped target or the alert's sender chose; in a note they are
    values, not Markdown. A label rendered by the playbook's templates, quoted in the labels
    line, interpolated into the rule's annotations, or repeated by a failing step's error
    became a link (`[click me](https://evil...)`), an image a ticket or chat client fetches
    (a tracking pixel), a heading, or left its code span. The operator's Markdown (the
    playbook's bold and link, the rule author's link in an annotation) stays markup. The
    note is rendered by the console's own CommonMark renderer; Slack gets it without the
    escapes (its mrkdwn has none, and no [text](url) links), `<` and `>` still escaped."""
    from remediator.console import _markdown

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "web.yaml").write_text(textwrap.dedent(MARKUP_RULES))

    async def runner(action, params, ctx):
        raise ActionError(f"backend answered: {LINK} {PIXEL}")

    slack = WebhookReceiver().start()
    try:
        cfg = Config(rules=[str(rules)], store="sqlite://", mode="live",
                     escalation_dir=str(tmp_path / "notes"), guards=loopback_guards(),
                     escalation_sinks={"hook": {"type": "webhook", "url": webhook_receiver.url,
                                                "headers": {"X-Token": SECRET}},
                                       "chat": {"type": "slack", "url": slack.url}},
                     escalation_default_sinks=["files", "hook", "chat"])
        service = Service(cfg, executor=Executor(runner=runner, retry_wait=0))
        labels = {"namespace": "shop", "title": LINK, "step": "# HEADING", "pixel": PIXEL,
                  "team": "*web*", "tick": "a` [x](https://evil.example/tick) `b",
                  "lines": "x\n\n# INJECTED\n\n[y](https://evil.example/lines)", "leak": SECRET}
        annotations = {"summary": f"{LINK} is down, see [the dashboard](https://grafana.example/d)"
                                  f" ({SECRET})",
                       "description": f"Checked by probe: {labels['lines']}\n\n{PIXEL}"}

        async def go() -> dict:
            await service.start(dispatch=False)
            sent = alert("WebDown", annotations=annotations, **labels)
            sent["generatorURL"] = ("http://prometheus:9090/graph?g0.expr=up%60%20%5Bx%5D"
                                    "(https%3A%2F%2Fevil.example%2Fexpr)&g0.tab=1")
            body = json.dumps(notification(sent))
            await service.intake(parse_notification(body.encode()))
            [decision] = await service.drain()
            await service.stop()
            return decision

        decision = asyncio.new_event_loop().run_until_complete(go())
        chat = slack.wait_for().body["text"]
    finally:
        slack.stop()
    assert decision["outcome"] == "failed", decision["reason"]
    note = (tmp_path / "notes" / f"{decision['id']}.md").read_text()
    html = _markdown().render(note)
    links = re.findall(r'(?:href|src)="([^"]*)"', html)  # the sender's own URL, as itself
    assert links == ['https://grafana.example/d', "http://prometheus:9090/graph?g0.expr=up"
                         "%60%20%5Bx%5D(https%3A%2F%2Fevil.example%2Fexpr)&amp;g0.tab=1",
                         "https://runbooks.example/web"], (links, html)
    assert "\">http://prometheus:9090/graph?g0.expr=up" in html  # its text is itself
    assert "<img" not in html and "tracker.example/pixel.png" in html, html
    assert "<h1>HEADING" not in html and "<h1>INJECTED" not in html and html.count("<h1>") == 1
    assert "<em>web</em>" not in html
    # ... each shown as it is, where the note put it
    for shown in (f"web down in shop: {LINK}", "<li># HEADING</li>", f"{LINK} is down",
                  f"backend answered: {LINK} {PIXEL}", "probe: x  # INJECTED  [y](https://evil.example/lines)",
                  "<code>lines=x  # INJECTED  [y](https://evil.example/lines)</code>"):
        assert shown in html, shown
    assert "<code>tick=a` [x](https://evil.example/tick) `b</code>" in html
    assert "<code>up` [x](https://evil.example/expr)</code>" in html  # the sender's expression
    # The operator's and the rule author's Markdown is markup.
    for markup in ("<strong>web team</strong> (*web*)",
                   '<a href="https://runbooks.example/web">the runbook</a>',
                   "<code>kubectl -n shop get pods</code>",
                   '<a href="https://grafana.example/d">the dashboard</a>'):
        assert markup in html, markup
    title = webhook_receiver.wait_for().body["title"]
    assert title.startswith(f"[CRITICAL] WebDown: web down in shop: {LINK} — "), title
    assert decision["escalation"]["title"] == title
    assert f"web down in shop: {LINK}" in chat and "\\[" not in chat and "<" not in chat
    # A secret the note shows escaped is still known to redaction (a sink's header here).
    hook = json.dumps(webhook_receiver.deliveries[0].body)
    for shown in (note, html, chat, hook):
        assert "s3cr" not in shown, shown
        assert "leak=<redacted>" in shown.replace("&lt;", "<").replace("&gt;", ">"), shown


COMMAND_RULES = """
playbooks:
  - name: exporter-down
    match: {alertname: ExporterDown}
    steps:
      - {name: probe, action: http.request, params: {url: "http://127.0.0.1:9/probe"}}
    escalation:
      summary: "{{ labels.title }} on {{ labels.instance }}"
      sinks: [files, am]
      next_steps:
        - "`curl -s 'http://{{ labels.instance }}/metrics?a=1&b={{ labels.version }}'`"
"""


def test_a_note_copies_an_address_as_it_is_and_a_page_shows_text_not_escapes(
        tmp_path, alertmanager_factory):
    """What CommonMark would not take as markup gets no backslash: an operator copies the
    command in a next step's backticks, where a backslash shows as itself
    (`10\\.20.30.40:9100` did not connect). A page (the Alertmanager sink's description) is
    read as text: the note's escapes are removed there, and not within its code, whose
    backslashes are the value's own (`re=a\\.b`)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "x.yaml").write_text(textwrap.dedent(COMMAND_RULES))

    async def runner(action, params, ctx):
        raise ActionError("connection refused")

    receiver = WebhookReceiver().start()
    try:
        am = alertmanager_factory(webhook_config(receiver.url))
        cfg = Config(rules=[str(rules)], store="sqlite://", mode="live",
                     escalation_dir=str(tmp_path / "notes"), guards=loopback_guards(),
                     escalation_sinks={"am": {"type": "alertmanager", "url": am.url}})
        service = Service(cfg, executor=Executor(runner=runner, retry_wait=0))

        async def go() -> dict:
            await service.start(dispatch=False)
            await service.intake(parse_notification(json.dumps(notification(alert(
                "ExporterDown", instance="10.20.30.40:9100", version="1.25.3",
                title="[node] *exporter*", re="a\\.b"))).encode()))
            [decision] = await service.drain()
            await service.stop()
            return decision

        decision = asyncio.new_event_loop().run_until_complete(go())
        note = (tmp_path / "notes" / f"{decision['id']}.md").read_text()
        assert "`curl -s 'http://10.20.30.40:9100/metrics?a=1&b=1.25.3'`" in note, note
        assert "\\[node\\] \\*exporter\\* on 10.20.30.40:9100" in note, note
        [page] = am.alerts(alertname="RemediationEscalation")
        description = page["annotations"]["description"]
        assert "[node] *exporter* on 10.20.30.40:9100" in description, description
        assert "\\[" not in description and "`re=a\\.b`" in description, description
    finally:
        receiver.stop()


def test_a_change_that_may_have_been_made_is_never_titled_nothing_was_changed(tmp_path):
    """The receiver took the POST and answered 500: the change may or may not have taken
    effect (the step is uncertain), and the note's title, the first thing the on-call reads,
    says so rather than "nothing was changed"."""
    receiver = WebhookReceiver(status=500)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "flaky.yaml").write_text(textwrap.dedent(f"""
        playbooks:
          - name: flaky-fix
            match: {{alertname: FlakyThing}}
            target: {{kind: service, namespace: default, name: flaky}}
            guards: {{cooldown: 10m}}
            steps:
              - name: poke
                action: http.request
                params: {{url: "http://127.0.0.1:{receiver.port}/poke", method: POST}}
            escalation: {{severity: warning, summary: "flaky thing"}}
        """))
    cfg = Config(rules=[str(rules)], store="sqlite://", mode="live",
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    service = Service(cfg, executor=Executor(retry_wait=0))

    async def go() -> dict:
        await service.start(dispatch=False)
        await service.intake(parse_notification(json.dumps(notification(alert(
            "FlakyThing"))).encode()))
        [decision] = await service.drain()
        await service.stop()
        return decision
    try:
        decision = asyncio.new_event_loop().run_until_complete(go())
    finally:
        receiver.stop()
    assert [d.path for d in receiver.deliveries] == ["/poke"]  # sent once: it may have acted
    [poke] = decision["steps"]
    assert (decision["outcome"], poke["outcome"], poke["uncertain"]) == ("failed", "failed", True)
    title = decision["escalation"]["title"]
    assert title.endswith("failed at step 'poke', poke may or may not have taken effect: "
                          "check by hand"), title
    assert "nothing was changed" not in decision["escalation"]["note"]
