"""`remediator` command line: serve | replay | lint | test | history | show | approve | schema."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import secrets
import signal
import sqlite3
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from . import __version__, ca_bundle, collector, event_loop  # ca_bundle: before aiohttp
from .alerts import PayloadError, parse_notification
from .config import Config, ConfigError, load_config, unknown_variables
from .guards import system_namespaces_open
from .logs import setup_logging
from .playbooks.validate import NoPlaybooks, RulesError
from .report import decision_text, history_text, terminal_text
from .store.base import OUTCOMES

log = logging.getLogger("remediator")


class Fatal(Exception):
    """Cannot start or go on (a port in use, no store): one line, exit 2, no traceback."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader gone away is told here, not in the interpreter's exit
        return code
    except KeyboardInterrupt:
        # Ctrl-C (`sleep 20 | remediator replay -`): ended as a shell reports SIGINT, without
        # a traceback. `serve` handles SIGINT itself (a graceful stop, exit 0).
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # `remediator schema | head`: end as a shell reports a process SIGPIPE ended, quietly
        # (stdout to /dev/null: the interpreter's last flush would fail again).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Fatal as exc:
        print(f"remediator: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        for problem in exc.problems or [exc]:
            print(f"remediator: configuration error: {str(problem).replace(': error: ', ': ', 1)}",
                  file=sys.stderr)
        return 2
    except NoPlaybooks as exc:  # nothing to run: one line, exit 2, as a missing directory
        print(f"remediator: {exc}", file=sys.stderr)
        return 2
    except RulesError as exc:
        print("remediator: rules refused:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="remediator", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--version", action="version", version=f"remediator {__version__}")
    sub = p.add_subparsers(required=True, metavar="COMMAND", parser_class=_Parser)

    def common(sp: argparse.ArgumentParser, store_default: str) -> None:
        sp.add_argument("--config", metavar="FILE", help="YAML config file (README: Configuration)")
        sp.add_argument("--rules", action="append", metavar="PATH",
                        help="playbook file or directory (repeatable; default: rules)")
        sp.add_argument("--store", help="store URL (sqlite:///path.db, sqlite:// in memory, "
                                        f"postgresql://user@host:port/db; default: {store_default})")

    s = sub.add_parser("serve", help="run the webhook receiver and worker")
    common(s, "sqlite:///remediator.db")
    s.add_argument("--listen", metavar="HOST:PORT",
                   help="address to serve on (default: 127.0.0.1:9095; 0.0.0.0:9095 for every "
                        "interface)")
    s.add_argument("--mode", choices=("dry-run", "live"),
                   help="live acts on systems (default: dry-run, which only records plans)")
    s.add_argument("--allow-unauthenticated", action="store_true", default=None,
                   help="serve without credentials: anyone may post alerts and use the whole API "
                   "(for a laptop; logged as a warning)")
    s.set_defaults(func=cmd_serve)

    r = sub.add_parser("replay", help="run a captured webhook payload through the pipeline")
    # cmd_replay keeps a replay in memory unless --store says otherwise: REMEDIATOR_STORE and
    # the config's store are serve's, and a dry run must leave no trace in them.
    common(r, "sqlite:// in memory, leaving no trace; REMEDIATOR_STORE and the config's store "
              "are not read")
    r.add_argument("payload", help="payload JSON file, or - for standard input")
    r.add_argument("--mode", choices=("dry-run", "live"), default="dry-run",
                   help="live acts on systems and needs --store (the store serve uses)")
    r.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    r.set_defaults(func=cmd_replay)

    lint = sub.add_parser("lint", help="validate playbooks (the same validator serve uses)",
                          description="Validate playbooks with the validator serve uses. "
                                      "Exit 0 clean, 1 errors (or warnings with --strict), 2 "
                                      "usage.")
    lint.add_argument("paths", nargs="*", metavar="PATH",
                      help="playbook files or directories (default: the config's rules, `rules`)")
    lint.add_argument("--config", metavar="FILE",
                      help="the process config serve runs with: its escalation sinks are "
                           "checked, and a step acting outside its allow lists (namespaces, "
                           "buckets, compose projects, HTTP hosts) is an error")
    lint.add_argument("--alert-rules", action="append", default=[], metavar="FILE",
                      help="Prometheus rule file or directory (repeatable): cross-check alert "
                           "names")
    lint.add_argument("--external-alert", action="append", default=[], metavar="NAME",
                      help="with --alert-rules: an alert defined by rules lint is not given, "
                           "e.g. kube-prometheus-stack's KubePodCrashLooping (repeatable)")
    lint.add_argument("--format", choices=("text", "json", "github"), default="text",
                      help="github: workflow annotations on the lines at fault")
    lint.add_argument("--strict", action="store_true", help="warnings fail too")
    lint.add_argument("--permissions", action="store_true",
                      help="print the Kubernetes RBAC rules, IAM actions and Docker Engine API "
                      "endpoints the playbooks need")
    lint.add_argument("-v", "--verbose", action="store_true",
                      help="say on stderr which optional checks ran (promtool over the PromQL)")
    lint.set_defaults(func=cmd_lint)

    t = sub.add_parser("test", help="run playbook unit tests (promtool style)",
                       description="Run playbook tests offline through the real engine. "
                                   "Exit 0 all pass, 1 a failure or an unusable test file.")
    t.add_argument("files", nargs="+", metavar="FILE",
                   help="test files, or directories searched for *_test.yaml")
    t.add_argument("--show", action="store_true",
                   help="print every decision (handy to write `expect:` from)")
    t.set_defaults(func=cmd_test)

    h = sub.add_parser("history", help="list recent decisions from the store")
    h.add_argument("--config", metavar="FILE", help="the config serve runs with (its store)")
    h.add_argument("--store", help="store URL, opened read-only (default: sqlite:///remediator.db)")
    h.add_argument("--limit", type=_positive, default=50, help="most recent decisions to list")
    h.add_argument("--outcome", choices=OUTCOMES, metavar="OUTCOME",
                   help=f"only this outcome: {', '.join(OUTCOMES)}")
    h.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    h.set_defaults(func=cmd_history)

    sh = sub.add_parser("show", help="show one decision in full")
    sh.add_argument("id", help="the decision's id (history lists them)")
    sh.add_argument("--config", metavar="FILE", help="the config serve runs with (its store)")
    sh.add_argument("--store", help="store URL, opened read-only (default: sqlite:///remediator.db)")
    sh.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    sh.set_defaults(func=cmd_show)

    a = sub.add_parser("approve", help="approve (or reject) a pending step through the API",
                       description="Approve (or reject) a step waiting for approval, through "
                       "the HTTP API of a running server. The credential is an operator's token "
                       "(config `operators:`), read from --token-file, else "
                       "REMEDIATOR_OPERATOR_TOKEN_FILE, else REMEDIATOR_OPERATOR_TOKEN; the "
                       "server records its owner as the approver.")
    a.add_argument("id", help="the blocked execution's id")
    a.add_argument("--reject", action="store_true", help="reject instead: the step never runs")
    a.add_argument("--step", help="the gated step to decide (default: the one pending)")
    a.add_argument("--url", default="http://127.0.0.1:9095", help="remediator's base URL")
    a.add_argument("--token-file", help="the operator's token (default: REMEDIATOR_OPERATOR_TOKEN_FILE, "
                   "else REMEDIATOR_OPERATOR_TOKEN); the server records its owner")
    a.set_defaults(func=cmd_approve)

    sc = sub.add_parser("schema", help="print the JSON Schema of playbook files (or, with "
                        "--config, of the config file; with --actions, a reference of the "
                        "actions)")
    which = sc.add_mutually_exclusive_group()  # one document, never two concatenated
    which.add_argument("--config", action="store_true",
                       help="the config file's schema instead of the playbooks'")
    which.add_argument("--actions", nargs="?", const="all", choices=("all", "builtin"),
                       help="instead, a readable reference of the actions (Markdown): every "
                            "installed one (all, the default), or the built-ins only (builtin: "
                            "docs/actions.md)")
    sc.set_defaults(func=cmd_schema)
    for choice in sub._choices_actions:  # each command's help is its description too
        parser = sub.choices[choice.dest]
        parser.description = parser.description or choice.help
    return p


class HelpFormatter(argparse.HelpFormatter):
    """Each flag's help ends with its default and, for a setting, its environment variable."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and \
                "default" not in text and action.option_strings:
            text += " (default: %(default)s)"
        env = f"REMEDIATOR_{action.dest.upper()}"
        if action.dest in _SETTINGS and action.default is None and action.option_strings and \
                env not in text:  # a help naming its variable already says how it is read
            text += f" [env {env}]"
        return text


class _Parser(argparse.ArgumentParser):
    """Subcommands: their help is their description, formatted like the main parser."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(**kwargs)


_SETTINGS = frozenset(Config.__dataclass_fields__) - {"guards", "operators"}


def _config(args: argparse.Namespace, **extra: Any) -> Config:
    return load_config(getattr(args, "config", None), rules=getattr(args, "rules", None),
                       store=getattr(args, "store", None), **extra)


# --- lint / test: imported when run (`serve` never needs them) -----------------------------

def cmd_lint(args: argparse.Namespace) -> int:
    from .lint import cmd_lint

    return cmd_lint(args)


def cmd_test(args: argparse.Namespace) -> int:
    from .playtest import cmd_test

    return cmd_test(args)


# --- serve ---------------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    cfg = _config(args, listen=args.listen, mode=args.mode,
                  allow_unauthenticated=args.allow_unauthenticated)
    setup_logging(cfg.log_level)
    for warning in unknown_variables(dict(os.environ)):
        log.warning(warning)
    for ns in system_namespaces_open(cfg.guards):  # allowed, written down: said at each start
        log.warning("system namespace %r is not denied by guards.namespaces (deny: %s; allow: "
                    "%s): remediator may change it", ns, cfg.guards.namespaces_deny,
                    cfg.guards.namespaces_allow or "any")
    if not (cfg.webhook_token or cfg.basic_auth_username or cfg.allow_unauthenticated):
        print("remediator: no webhook credentials: set REMEDIATOR_WEBHOOK_TOKEN (or _FILE), "
              "basic auth, or pass --allow-unauthenticated", file=sys.stderr)
        return 2
    _rules_exist(cfg)
    return event_loop.run(_serve(cfg), cfg.event_loop)


def _rules_exist(cfg: Config) -> None:
    missing = [p for p in cfg.rules if not os.path.exists(p)]
    if missing:
        kind = "directory" if not missing[0].endswith((".yaml", ".yml")) else "file"
        raise Fatal(f"no playbooks: {kind} {missing[0]!r} not found in {os.getcwd()}; "
                    "pass --rules PATH")


async def _serve(cfg: Config) -> int:
    from aiohttp import web

    from .server import build_app
    from .server.listener import CappedSite, connection_limit
    from .service import Service

    # The imported modules live as long as the process (and hold a few dozen objects of
    # cyclic garbage at most): frozen now, the collection below walks only what start-up
    # builds. Nothing start-up builds is garbage worth chasing meanwhile (collector.paused
    # says why): collected once, not in passes over all of it as it grows.
    gc.freeze()
    with collector.paused():
        service = await _started(Service(cfg))
        # What start-up built (modules, rules, compiled templates) lives as long as the
        # process: frozen out of the collector's sight, a full collection in a storm walks
        # only what the storm made (full passes over everything stalled acknowledgements for
        # 100s of ms).
        gc.collect()
        gc.freeze()
    full_collections = collector.between_webhooks()
    loop = asyncio.get_running_loop()
    loop_name = event_loop.name(loop)
    if loop_name == "asyncio":  # uvloop reads into a buffer of its own
        collector.receive_buffers_from_the_heap()
    service.metrics.build.info({"version": __version__, "event_loop": loop_name})
    if cfg.mode == "live":
        log.warning("MODE: LIVE — remediator WILL change production systems "
                    "(%d playbooks loaded)", len(service.rules))
    else:
        log.warning("MODE: DRY-RUN — remediator records plans and changes nothing "
                    "(%d playbooks loaded)", len(service.rules))
    if cfg.allow_unauthenticated:
        log.warning("authentication is DISABLED (--allow-unauthenticated): anyone who reaches "
                    "%s may post alerts, read decisions, approve, pause and reset circuits",
                    cfg.listen)
    elif not cfg.operators:
        log.warning("no operators configured: the /api/v1 endpoints refuse everyone")
    runner = web.AppRunner(build_app(service), handle_signals=False, access_log=None,
                           keepalive_timeout=cfg.idle_timeout)
    await runner.setup()
    host, _, port = cfg.listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") else host  # [::1]:9095, an IPv6 address
    site = CappedSite(runner, host or "0.0.0.0", int(port),
                      connection_limit(cfg.max_connections), service.metrics.connections_refused)
    try:
        await site.start()
    except OSError as exc:  # in use, not an address of this host, a name that does not resolve
        await service.stop()
        await runner.cleanup()
        raise Fatal(f"cannot listen on {cfg.listen}: {exc.strerror or exc}") from None
    log.info("listening on %s (event loop: %s)", site.bound(), loop_name)
    # Ready: the CA bundle loads now, not beside start-up (ca_bundle.py says why), before any
    # client session (`loaded()` waits for it).
    ca_bundle.start()

    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    reloads: set[asyncio.Task[None]] = set()  # held until done (the loop keeps weak refs)

    def reload() -> None:
        task = asyncio.create_task(_reload(service), name="reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
    log.info("shutting down: intake stopped, letting running steps finish (grace %gs)",
             cfg.grace_period)
    service.ready = False
    await site.stop()
    full_collections.cancel()
    await service.stop()
    await runner.cleanup()
    return 0


async def _reload(service: Any) -> None:
    with contextlib.suppress(RulesError):  # logged by the service; the old rules keep serving
        await service.reload()


# --- replay --------------------------------------------------------------------------------

def cmd_replay(args: argparse.Namespace) -> int:
    setup_logging("warning", json_format=False)
    if args.mode == "live" and not args.store:
        # A throwaway store has no kill switch, cooldowns, rate limits, circuits or budget.
        print("remediator replay: --mode live needs --store (the store serve uses), so its "
              "pause, cooldowns, rate limits, circuits and budget apply", file=sys.stderr)
        return 2
    cfg = _config(args, mode=args.mode)
    # Bytes, as a webhook's body (its encoding is judged where the webhook's is), and no
    # more than the webhook takes: `replay /dev/zero` was a MemoryError.
    body = _read(args.payload, cfg.max_body_bytes)
    try:
        notification = parse_notification(body)
    except PayloadError as exc:
        print(f"remediator: invalid payload: {exc}", file=sys.stderr)
        return 2
    _rules_exist(cfg)
    if not args.store:
        cfg.store = "sqlite://"  # a replay leaves no trace unless asked to
    elif args.mode != "live":
        # A dry run recorded in serve's store under the alerts' own identities made
        # Alertmanager's copy, sent later, a duplicate serve never decided (execution ids
        # come from the dedupe key): a dry run's alerts get identities of their own.
        nonce = secrets.token_hex(4)
        for item in notification.items:
            item["fingerprint"] = f"replay-{nonce}-{item['fingerprint']}"
    if args.mode == "live":
        # A store that does not exist yet (a typo, `sqlite://`) would be a new empty one:
        # no pause, cooldowns, rate limits, circuits nor budget. Opened as history does.
        try:
            asyncio.run(_query(cfg, lambda store: asyncio.sleep(0)))
        except Fatal as exc:
            raise Fatal(f"replay --mode live needs the existing store serve uses, which holds "
                        f"the pause, cooldowns, rate limits, circuits and budget: {exc}") from None
    from .service import Undecided

    try:
        decisions, undecided = event_loop.run(_replay(cfg, notification), cfg.event_loop), None
    except Undecided as exc:  # what was decided is shown; the rest is named, never hidden
        decisions, undecided = exc.decisions, exc
    if args.format == "json":
        print(json.dumps(decisions, indent=2, default=str))
    elif decisions or undecided is None:
        print("\n\n".join(decision_text(d) if d["outcome"] != "duplicate" else
                            f"{d['count']} alert(s) already received: not decided again"
                            for d in decisions))
    if undecided is not None:
        raise Fatal(undecided)
    return 0


async def _started(service: Any, dispatch: bool = True, recover: bool = True) -> Any:
    """The service started, or Fatal: a store that cannot be opened (or is another
    process's: a SQLite file has one writer) is one line and exit 2, never a traceback."""
    from .store.base import StoreUnavailable

    try:
        await service.start(dispatch=dispatch, recover=recover)
    except (StoreUnavailable, sqlite3.Error) as exc:
        await service.stop()
        raise _unopened(service.config, exc) from None
    return service


async def _replay(cfg: Config, notification: Any) -> list[dict[str, Any]]:
    from .service import Service

    # Not the store's worker: what serve holds, left pending or had interrupted is serve's.
    service = await _started(Service(cfg), dispatch=False, recover=False)
    try:
        decisions, duplicates = await service.replay(notification)
        return decisions + ([{"alertname": "-", "outcome": "duplicate", "count": duplicates}]
                            if duplicates else [])
    finally:
        await service.stop()


def _read(path: str, limit: int) -> bytes:
    """A file's bytes, or standard input's for `-`; refused past `limit` bytes."""
    try:
        if path == "-":
            body = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as f:
                body = f.read(limit + 1)
    except OSError as exc:
        raise Fatal(f"cannot read {path}: {exc.strerror}") from None
    if len(body) > limit:
        raise Fatal(f"{'standard input' if path == '-' else path}: the payload exceeds "
                    f"max_body_bytes ({limit} bytes), as the webhook would refuse it")
    return body


# --- history / show / approve / schema -----------------------------------------------------

def cmd_history(args: argparse.Namespace) -> int:
    decisions = asyncio.run(_query(_config(args), lambda s: s.list_executions(
        args.limit, **({"outcome": args.outcome} if args.outcome else {}))))
    print(json.dumps(decisions, indent=2) if args.format == "json" else history_text(decisions))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    decision = asyncio.run(_query(_config(args), lambda s: s.get_execution(args.id)))
    if decision is None:
        print(f"remediator: no execution {args.id!r}", file=sys.stderr)
        return 1
    print(json.dumps(decision, indent=2) if args.format == "json" else decision_text(decision))
    if args.format == "text" and decision.get("escalation"):
        print("\n" + terminal_text(decision["escalation"]["note"], lines=True))
    return 0


async def _query(cfg: Config, fn: Any) -> Any:
    from .store import open_store
    from .store.base import StoreUnavailable

    # Read-only beside a running server: never creates a store, writes or checkpoints.
    store = open_store(cfg.store, read_only=True, password=cfg.store_password)
    try:
        await store.open()
    except (StoreUnavailable, sqlite3.Error) as exc:
        raise _unopened(cfg, exc) from None
    try:
        return await fn(store)
    except StoreUnavailable as exc:  # opened, then refused (a lost connection, a bad file)
        raise _unopened(cfg, exc) from None
    finally:
        await store.close()


def _unopened(cfg: Config, exc: Exception) -> Fatal:
    """The store's refusal in one line: its URL with the password masked, then the reason."""
    from . import redact
    from .store.url import redact as shown

    return Fatal(f"cannot open the store {shown(cfg.store)}: {redact.text(str(exc))}")


def cmd_approve(args: argparse.Namespace) -> int:
    try:
        parts = urllib.parse.urlsplit(args.url)
    except ValueError:  # "http://[::1"
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise Fatal(f"--url {args.url!r}: not an http:// or https:// URL "
                    "(e.g. http://127.0.0.1:9095)")
    token = _operator_token(args.token_file)
    verb = "reject" if args.reject else "approve"
    query = f"?{urllib.parse.urlencode({'step': args.step})}" if args.step else ""
    execution = urllib.parse.quote(args.id, safe="")  # one path segment, whatever was typed
    req = urllib.request.Request(f"{args.url.rstrip('/')}/api/v1/executions/{execution}/{verb}"
                                 f"{query}", method="POST", data=b"{}")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    from . import redact

    url = redact.text(args.url)  # as errors show it: never a user:password it holds
    try:
        # Redirects are not followed: urllib sent the operator token on to wherever one led.
        with urllib.request.build_opener(_NoRedirects).open(req, timeout=60) as resp:
            raw, running = resp.read(), resp.status == 202
    except urllib.error.HTTPError as exc:
        # Sent without a credential, a 401 is ours to explain: where a token is looked for.
        hint = ("; no operator token was sent: pass --token-file, or set "
                "REMEDIATOR_OPERATOR_TOKEN_FILE or REMEDIATOR_OPERATOR_TOKEN"
                if exc.code == 401 and not token else
                f"; a redirect (to {redact.text(exc.headers.get('Location', '?'))}) is not "
                "followed: the operator token goes to --url only" if 300 <= exc.code < 400
                else "")
        body = exc.read().decode("utf-8", "replace")[:500]
        print(f"remediator: {verb} failed: {exc.code} {redact.text(body)}{hint}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"remediator: cannot reach {url}: {redact.text(str(exc.reason))}", file=sys.stderr)
        return 1
    except (TimeoutError, OSError) as exc:  # sent, unanswered: it may have been decided
        print(f"remediator: no answer from {url} ({redact.text(str(exc))}): the {verb} may have "
              f"been recorded; see `remediator show {args.id}` before trying again",
              file=sys.stderr)
        return 1
    try:
        shown = decision_text(json.loads(raw))
    except (ValueError, KeyError, TypeError, AttributeError):
        # Not remediator's answer (a proxy's page, another service): it may have been decided.
        print(f"remediator: {url} answered {verb} with what is not a decision "
              f"({redact.text(raw[:200].decode('utf-8', 'replace'))!r}): see "
              f"`remediator show {args.id}`", file=sys.stderr)
        return 1
    print(shown)
    if running:  # a run's wait (a rollout, a metric) outlasts an answer
        print(f"\n{'Approved' if verb == 'approve' else 'Rejected'}; the execution is still "
              f"running: follow it with `remediator show {args.id}` or the console.")
    return 0


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is answered as the HTTPError it is, not followed."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _positive(text: str) -> int:
    """A count of at least 1: SQLite read LIMIT -1 as no limit, PostgreSQL refused it."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return number


def _operator_token(path: str | None) -> str:
    """An operator's own credential, never the webhook's: --token-file, else the environment."""
    option = "--token-file" if path else "REMEDIATOR_OPERATOR_TOKEN_FILE"
    path = path or os.environ.get("REMEDIATOR_OPERATOR_TOKEN_FILE")
    if path:
        try:
            token, source = Path(path).read_bytes().decode("utf-8", "replace").strip(), path
        except OSError as exc:  # the path unquoted: a token given in its place would be
            raise Fatal(f"cannot read the operator token file {option} names: "
                        f"{exc.strerror}") from None
    else:
        token = os.environ.get("REMEDIATOR_OPERATOR_TOKEN", "").strip()
        source = "REMEDIATOR_OPERATOR_TOKEN"
    # http.client refuses such a header with a traceback that quotes it, the token in it.
    if not (token.isascii() and token.isprintable()):
        raise Fatal(f"the operator token in {source} holds what an HTTP header cannot carry "
                    "(a line break, a control character, non-ASCII text)")
    return token


def cmd_schema(args: argparse.Namespace) -> int:
    from .config_schema import config_schema
    from .playbooks.schema import json_schema

    if args.actions:
        from .actions.reference import reference
        from .actions.registry import ACTIONS, BUILTIN

        print(reference(BUILTIN if args.actions == "builtin" else ACTIONS), end="")
        return 0
    print(json.dumps(config_schema() if args.config else json_schema(), indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
