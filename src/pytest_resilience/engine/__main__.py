"""``python -m pytest_resilience.engine``: the engine as a standalone service.

    serve       run the webhook receiver and the engine until SIGTERM/SIGINT
    incidents   list the incidents a store holds (table or JSON), ids for postmortem
    postmortem  export one incident (Markdown or JSON) from a store
    scenario    write a YAML regression scenario that replays an incident's cause as a fault

The target is the embedded local target (``--target local --services FILE``), a Kubernetes
cluster (``--target kubernetes``: the pod's service account when run in one, else a kubeconfig;
the plugin's blast-radius rules, ``--chaos-allow``), or any Target built by a factory
(``--target-factory module:function``), or none: then every alert is escalated (there is
nothing to act on) unless ``--dry-run``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from ..errors import ConfigError, NotAllowed, ResilienceError, TargetError
from .escalation import Channel, GenericWebhook, PagerDuty
from .listing import incidents_json, incidents_table, list_incidents, parse_since
from .playbooks import BUNDLED_PLAYBOOKS
from .postmortem import build_postmortem
from .redaction import LOGGER
from .runner import Engine
from .safety import SafetyPolicy
from .store import Store

if TYPE_CHECKING:
    from ..targets.base import Target
    from ..targets.kubernetes import KubernetesTarget


def build_parser() -> argparse.ArgumentParser:
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
    serve.add_argument(
        "--store",
        required=True,
        type=Path,
        help="SQLite file of incidents, actions and the page outbox (created if missing; "
        "a restart on the same file resumes open incidents)",
    )
    serve.add_argument(
        "--listen",
        default="127.0.0.1:9095",
        metavar="HOST:PORT",
        help="where the Alertmanager-compatible webhook listens (POST /alerts, GET /healthz); "
        "default %(default)s, port 0 picks a free one",
    )
    serve.add_argument(
        "--target",
        choices=("none", "local", "kubernetes"),
        default="none",
        help="what actions act on: none (every alert is escalated), local (the embedded "
        "local target, needs --services) or kubernetes (a cluster: in a pod its service "
        "account, else --kubeconfig/--context); default %(default)s",
    )
    serve.add_argument(
        "--services", type=Path, metavar="FILE", help="services YAML for --target local"
    )
    serve.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="kubeconfig for --target kubernetes (default: in a pod, i.e. with "
        "KUBERNETES_SERVICE_HOST set, the pod's service account; else $KUBECONFIG or "
        "~/.kube/config)",
    )
    serve.add_argument(
        "--context", help="kubeconfig context for --target kubernetes (default: its current one)"
    )
    serve.add_argument(
        "--namespace",
        help="namespace whose workloads --target kubernetes acts on (default: in a pod its own, "
        "else default)",
    )
    serve.add_argument(
        "--chaos-allow",
        "--allow",
        dest="allow",
        action="append",
        default=[],
        metavar="RULE",
        help="the plugin's blast-radius rules for --target kubernetes, repeatable: "
        "context:NAME, namespace:NAME, !namespace:NAME, !context:NAME; only kind-* contexts "
        "on a local server are allowed by default, in a pod the context is 'in-cluster' "
        "(allow it with context:in-cluster); system namespaces need namespace:NAME",
    )
    serve.add_argument(
        "--target-factory",
        metavar="MODULE:FUNCTION",
        help="a function returning a Target, instead of --target",
    )
    serve.add_argument(
        "--dry-run",
        action="store_true",
        help="decide and record every step, act on nothing",
    )
    serve.add_argument("--token-env", help="env var holding the bearer token the webhook requires")
    serve.add_argument("--pagerduty", action="store_true", help="page via PAGERDUTY_ROUTING_KEY")
    serve.add_argument("--pagerduty-url", help="Events API v2 URL (default PagerDuty's)")
    serve.add_argument(
        "--escalation-webhook",
        action="append",
        default=[],
        metavar="URL",
        help="also POST each escalation as JSON to URL (repeatable)",
    )
    serve.add_argument(
        "--cooldown",
        type=float,
        default=SafetyPolicy.cooldown_s,
        metavar="SECONDS",
        help="no second remediation of the same alert on the same target within this "
        "time; default %(default)s",
    )
    serve.add_argument(
        "--breaker-failures",
        type=int,
        default=SafetyPolicy.breaker_failures,
        metavar="N",
        help="failed remediations in a row that open the circuit breaker (auto-remediation "
        "paused, everything escalated until it resets); default %(default)s",
    )
    serve.add_argument(
        "--log-level",
        default="INFO",
        help="DEBUG, INFO, WARNING or ERROR; default %(default)s",
    )
    listing = sub.add_parser(
        "incidents", help="list the incidents of a store, newest last (ids for postmortem)"
    )
    listing.add_argument("--store", required=True, type=Path, help="the engine's SQLite file")
    listing.add_argument(
        "--open",
        action="store_true",
        help="only incidents not closed yet (being remediated, or paged and still firing)",
    )
    listing.add_argument(
        "--since",
        metavar="DURATION|ISO",
        help="only incidents opened since then: 30m, 2h, 7d ago, or 2026-12-01T08:00:00Z",
    )
    listing.add_argument(
        "--format", choices=("table", "json"), default="table", help="default %(default)s"
    )
    pm = sub.add_parser("postmortem", help="export an incident's postmortem")
    pm.add_argument("--store", required=True, type=Path, help="the engine's SQLite file")
    pm.add_argument("incident", help="incident id, as `incidents` lists it")
    pm.add_argument("--format", choices=("md", "json"), default="md", help="default %(default)s")
    sc = sub.add_parser(
        "scenario",
        help="write a YAML regression scenario replaying an incident's cause as a fault",
    )
    sc.add_argument("--store", required=True, type=Path, help="the engine's SQLite file")
    sc.add_argument("incident", help="incident id, as `incidents` lists it")
    sc.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="write the scenario here (collected by the plugin under a scenarios/ "
        "directory); default: standard output",
    )
    sc.add_argument(
        "--force", action="store_true", help="overwrite FILE if it exists (default: refuse)"
    )
    sc.add_argument(
        "--proxy",
        metavar="NAME",
        help="the dependency proxy (Toxiproxy name, e.g. postgres) a latency or "
        "connection-saturation replay slows, when the alert is about its caller",
    )
    sc.add_argument(
        "--volume",
        metavar="SERVICE",
        help="the service whose volume a disk alert about a node fills",
    )
    sc.add_argument(
        "--release",
        metavar="VERSION",
        help="the faulty version a bad-release replay rolls out (the one the engine rolled "
        "back from), when the alert has no version label",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        if args.command == "postmortem":
            return _postmortem(args)
        if args.command == "scenario":
            return _scenario(args, argv)
        if args.command == "incidents":
            return _incidents(args)
        return _serve(args)
    except ResilienceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _incidents(args: argparse.Namespace) -> int:
    if not args.store.exists():
        raise ConfigError(f"no store at {args.store}", field="--store")
    since = parse_since(args.since) if args.since else None
    store = Store(args.store)
    try:
        incidents = list_incidents(store, open_only=args.open, since=since)
    finally:
        store.close()
    if args.format == "json":
        print(incidents_json(incidents))
    elif incidents:
        print(incidents_table(incidents))
    else:
        filtered = " matching the filters" if since is not None or args.open else ""
        print(f"no incidents in {args.store}{filtered}")
    return 0


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


def _scenario(args: argparse.Namespace, argv: list[str]) -> int:
    import sqlite3

    from .regression import build_regression, regression_command

    if not args.store.is_file():
        raise ConfigError(f"no store at {args.store}", field="--store")
    if args.output is not None and args.output.exists() and not args.force:
        raise ConfigError(f"{args.output} exists; give --force to overwrite it", field="--output")
    try:  # read-only first: Store() would add the engine's tables to any SQLite file
        probe = sqlite3.connect(f"file:{args.store}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in probe.execute("SELECT name FROM sqlite_master")}
        finally:
            probe.close()
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{args.store} is not an engine store: {exc}", field="--store") from None
    if "incidents" not in tables:
        raise ConfigError(
            f"{args.store} is not an engine store (no incidents table)", field="--store"
        )
    store = Store(args.store)
    try:
        regression = build_regression(
            store, args.incident, proxy=args.proxy, volume=args.volume, release=args.release
        )
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{args.store} is not an engine store: {exc}", field="--store") from None
    finally:
        store.close()
    text = regression.to_yaml(regression_command(argv))
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    except OSError as exc:
        raise ConfigError(f"cannot write {args.output}: {exc.strerror}", field="--output") from None
    print(
        f"wrote {args.output}: {regression.replay.fault} on {regression.subject}, "
        f"recovery within {regression.within_s:g} s",
        file=sys.stderr,
    )
    return 0


def _target(args: argparse.Namespace) -> Target:
    if args.target_factory:
        module, _, name = args.target_factory.partition(":")
        try:
            factory: Callable[[], Target] = getattr(importlib.import_module(module), name)
            return factory()  # --target-factory's contract: a function returning a Target
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"cannot load {args.target_factory!r}: {exc}", field="--target-factory"
            ) from None
    if args.target == "kubernetes":
        return _kubernetes_target(args)
    if args.target == "local":
        if args.services is None:
            raise ConfigError("--target local needs --services FILE", field="--services")
        from ..targets.local import LocalTarget

        target = LocalTarget.from_file(args.services, work_dir=args.store.parent / "local-target")
        target.start()
        return target
    return _NoTarget()  # type: ignore[return-value]  # no Target: __getattr__ refuses each call


_KUBE_OPTIONS = ("kubeconfig", "context", "namespace", "allow")
_SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _check_target_options(args: argparse.Namespace) -> None:
    """Options of one target given with another are a mistake, not something to ignore."""
    chosen = "--target-factory" if args.target_factory else f"--target {args.target}"
    if args.target_factory and args.target != "none":
        raise ConfigError(
            f"give either --target-factory or --target {args.target}, not both",
            field="--target-factory",
        )
    if args.target != "kubernetes":
        for name in _KUBE_OPTIONS:
            if getattr(args, name):
                flag = "--chaos-allow" if name == "allow" else f"--{name}"
                raise ConfigError(f"{flag} is for --target kubernetes, not {chosen}", field=flag)
    if args.target != "local" and args.services is not None:
        raise ConfigError(f"--services is for --target local, not {chosen}", field="--services")


def _kubernetes_target(args: argparse.Namespace) -> KubernetesTarget:
    """The cluster, under the plugin's blast-radius policy (targets/kubernetes/safety.py): a
    refused context or namespace stops serve before any request is sent."""
    from ..targets.kubernetes import ChaosPolicy, KubernetesTarget

    ChaosPolicy.parse(args.allow)  # a malformed rule is named before connecting
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not (
        args.kubeconfig or args.context
    )
    if args.kubeconfig and not Path(args.kubeconfig).is_file():
        raise ConfigError(f"no such file: {args.kubeconfig}", field="--kubeconfig")
    namespace = args.namespace
    if namespace is None:
        own = Path(_SA_NAMESPACE)
        namespace = own.read_text().strip() if in_cluster and own.is_file() else "default"
    if not _DNS_LABEL.fullmatch(namespace):
        raise ConfigError(
            f"{namespace!r} is not a namespace name (lowercase letters, digits and '-', "
            "at most 63)",
            field="--namespace",
        )
    try:
        target = KubernetesTarget(
            kubeconfig=args.kubeconfig,
            context=args.context,
            namespace=namespace,
            allow=args.allow,
            dry_run=args.dry_run,
            in_cluster=in_cluster,
        )
        LOGGER.info(
            "acting on kubernetes context %r (API server %s), namespace %r",
            str(target.context),
            target.conn.host,
            target.namespace,
        )
        return target
    except NotAllowed:
        raise  # names the rule to pass (--chaos-allow ...)
    except TargetError as exc:  # kubeconfig or context unusable, not in a pod
        field = "--context" if args.context else "--kubeconfig"
        raise ConfigError(str(exc), field=field) from None


class _NoTarget:
    """No platform to act on: every action fails, so incidents escalate with the reason."""

    name = "none"

    def subscribe(self, callback: object) -> Callable[[], None]:
        return lambda: None

    def __getattr__(self, attr: str) -> Callable[..., NoReturn]:
        def refuse(*args: object, **kwargs: object) -> NoReturn:
            raise ResilienceError("serve was started without a target (--target/--target-factory)")

        return refuse


def _serve(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s"
    )
    channels: list[Channel] = []
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
    _check_target_options(args)
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
