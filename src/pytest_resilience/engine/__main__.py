"""``python -m pytest_resilience.engine``: the engine as a standalone service.

    serve       run the webhook receiver and the engine until SIGTERM/SIGINT
    postmortem  export one incident (Markdown or JSON) from a store

The target is the embedded local target (``--target local --services FILE``), or any
Target built by a factory (``--target-factory module:function``), or none: then
every alert is escalated (there is nothing to act on) unless ``--dry-run``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from pathlib import Path

from ..errors import ConfigError, ResilienceError
from .escalation import GenericWebhook, PagerDuty
from .playbooks import BUNDLED_PLAYBOOKS
from .postmortem import build_postmortem
from .redaction import LOGGER
from .runner import Engine
from .safety import SafetyPolicy
from .store import Store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_resilience.engine")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the engine with its webhook receiver")
    serve.add_argument(
        "--playbooks",
        action="append",
        default=[],
        type=Path,
        help="a directory of playbooks layered over the bundled ones (repeatable)",
    )
    serve.add_argument("--store", required=True, type=Path)
    serve.add_argument("--listen", default="127.0.0.1:9095")
    serve.add_argument("--target", choices=("none", "local"), default="none")
    serve.add_argument("--services", type=Path, help="services YAML for --target local")
    serve.add_argument("--target-factory", help="module:function returning a Target")
    serve.add_argument("--dry-run", action="store_true")
    serve.add_argument("--token-env", help="env var holding the bearer token the webhook requires")
    serve.add_argument("--pagerduty", action="store_true", help="page via PAGERDUTY_ROUTING_KEY")
    serve.add_argument("--pagerduty-url", help="Events API v2 URL (default PagerDuty's)")
    serve.add_argument("--escalation-webhook", action="append", default=[], metavar="URL")
    serve.add_argument("--cooldown", type=float, default=SafetyPolicy.cooldown_s)
    serve.add_argument("--breaker-failures", type=int, default=SafetyPolicy.breaker_failures)
    serve.add_argument("--log-level", default="INFO")
    pm = sub.add_parser("postmortem", help="export an incident's postmortem")
    pm.add_argument("--store", required=True, type=Path)
    pm.add_argument("incident")
    pm.add_argument("--format", choices=("md", "json"), default="md")
    args = parser.parse_args(argv)
    try:
        if args.command == "postmortem":
            return _postmortem(args)
        return _serve(args)
    except ResilienceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _postmortem(args: argparse.Namespace) -> int:
    if not args.store.exists():
        raise ConfigError(f"no store at {args.store}", field="--store")
    store = Store(args.store)
    try:
        report = build_postmortem(store, args.incident)
    except KeyError as exc:
        raise ConfigError(str(exc.args[0]), field="incident") from None
    finally:
        store.close()
    print(report.to_markdown() if args.format == "md" else report.to_json())
    return 0


def _target(args: argparse.Namespace):
    if args.target_factory:
        module, _, name = args.target_factory.partition(":")
        try:
            return getattr(importlib.import_module(module), name)()
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"cannot load {args.target_factory!r}: {exc}", field="--target-factory"
            ) from None
    if args.target == "local":
        if args.services is None:
            raise ConfigError("--target local needs --services FILE", field="--services")
        from ..targets.local import LocalTarget

        target = LocalTarget.from_file(args.services, work_dir=args.store.parent / "local-target")
        target.start()
        return target
    return _NoTarget()


class _NoTarget:
    """No platform to act on: every action fails, so incidents escalate with the reason."""

    name = "none"

    def subscribe(self, callback: object):
        return lambda: None

    def __getattr__(self, attr: str):
        def refuse(*args: object, **kwargs: object):
            raise ResilienceError("serve was started without a target (--target/--target-factory)")

        return refuse


def _serve(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s"
    )
    channels = []
    if args.pagerduty or args.pagerduty_url:
        channels.append(PagerDuty(**({"url": args.pagerduty_url} if args.pagerduty_url else {})))
    for i, url in enumerate(args.escalation_webhook):
        channels.append(GenericWebhook(url, name=f"webhook{i or ''}"))
    token = None
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            raise ConfigError(
                f"environment variable {args.token_env} is not set", field="--token-env"
            )
    target = _target(args)
    engine = Engine(
        target,
        playbooks_dir=[BUNDLED_PLAYBOOKS, *args.playbooks],
        store_path=args.store,
        dry_run=args.dry_run,
        escalation=channels,
        listen=args.listen,
        webhook_token=token,
        safety=SafetyPolicy(cooldown_s=args.cooldown, breaker_failures=args.breaker_failures),
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    engine.start()
    open_incidents = sum(1 for i in engine.incidents() if i.open)
    print(
        f"listening on {engine.webhook_url}/alerts (store {args.store}, "
        f"{len(engine.playbooks)} playbooks, {open_incidents} open incidents resumed)",
        flush=True,
    )
    LOGGER.info("engine serving on %s", engine.webhook_url)
    done.wait()
    engine.close()
    if not isinstance(target, _NoTarget):
        target.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
