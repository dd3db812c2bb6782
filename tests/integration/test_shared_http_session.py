"""Every HTTP call (steps, Prometheus, Alertmanager, sinks) goes over one shared session, for
speed: it must share connections only, never state. A cookie one alert's call was given (a
service's session after that playbook's credentials) is not sent with another alert's call."""

from __future__ import annotations

import json
import textwrap
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from remediator.alerts import parse_notification
from remediator.config import Config
from remediator.service import Service
from tests.support.payloads import alert, notification
from tests.support.procs import serve_http
from tests.support.worker import loopback_guards

RULES = """
playbooks:
  - name: ask-{team}
    match: {{alertname: Ask, matchers: ['team="{team}"']}}
    steps:
      - name: status
        action: http.request
        params: {{url: "http://localhost:{port}/{team}/status", method: GET}}
"""


def test_a_cookie_one_alerts_call_was_given_is_not_sent_with_anothers(tmp_path: Path,
                                                                       run: Any) -> None:
    cookies: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            cookies.append((self.path, self.headers.get("Cookie", "")))
            self.send_response(200)
            # What a service answers a caller it authenticated: its session, for the path
            self.send_header("Set-Cookie", f"session={self.path.split('/')[1]}-secret; Path=/")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server, port = serve_http(Handler)
    rules = tmp_path / "rules"
    rules.mkdir()
    for team in ("a", "b"):
        (rules / f"{team}.yaml").write_text(textwrap.dedent(RULES.format(team=team, port=port)))
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/s.db", mode="live",
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards(),
                 rules_cache="")
    service = Service(cfg)

    async def scenario() -> list[dict]:
        await service.start(dispatch=False)
        try:
            decisions = []
            for n, team in enumerate(("a", "b", "a")):
                body = notification(alert("Ask", fingerprint=f"f{n}", team=team))
                await service.intake(parse_notification(json.dumps(body).encode()))
                decisions += await service.drain()
            return decisions
        finally:
            await service.stop()

    try:
        decisions = run(scenario())
    finally:
        server.shutdown()
        server.server_close()
    assert [d["outcome"] for d in decisions] == ["succeeded"] * 3, decisions
    assert cookies == [("/a/status", ""), ("/b/status", ""), ("/a/status", "")]
