"""Post one KubePodCrashLooping alert for a real pod to Alertmanager, as Prometheus would;
then tell from the incident's postmortem whether the engine replaced that pod.

A smoke test of the path engine.yaml and alertmanager.yaml set up: Alertmanager routes the
alert (alertmanager-receiver.yaml) to the engine, whose crash-loop playbook replaces the pod.
Standard library only, so it runs where the engine runs (the image has Python, no curl):

    kubectl -n chaos-demo exec -i deploy/pytest-resilience-engine -- \\
        python - post --pod api-7d9f8b6c5d-xk2mn < deploy/engine/smoke-alert.py
    kubectl -n chaos-demo exec deploy/pytest-resilience-engine -- python -m \\
        pytest_resilience.engine postmortem --store STORE ID --format json \\
        | python3 deploy/engine/smoke-alert.py acted --pod api-7d9f8b6c5d-xk2mn

The labels are the ones kube-prometheus-stack's rule puts on it (kubernetes-mixin
alerts/apps_alerts.libsonnet, with the kube-state-metrics scrape's job), as in
tests/payloads/alertmanager-0.25-kube-pod-crashlooping-firing.body. The body is Alertmanager's
API v2 postableAlerts (api/v2/openapi.yaml): a list of {labels, annotations, startsAt}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import urllib.error
import urllib.request

ALERTNAME = "KubePodCrashLooping"


def alert(namespace: str, pod: str, container: str) -> dict:
    """One postableAlert: no endsAt, so Alertmanager keeps it firing (resolve_timeout)."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "labels": {
            "alertname": ALERTNAME,
            "namespace": namespace,
            "pod": pod,
            "container": container,
            "job": "kube-state-metrics",
            "reason": "CrashLoopBackOff",
            "severity": "warning",
        },
        "annotations": {
            "description": f'Pod {namespace}/{pod} ({container}) is in waiting state (reason: "'
            'CrashLoopBackOff").',
            "runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/"
            "kubepodcrashlooping",
            "summary": "Pod is crash looping.",
        },
        "startsAt": now,
    }


PLAYBOOK = "Pod Crash Loop"


def acted(postmortem: dict, pod: str) -> str | None:
    """Why the postmortem is not the crash-loop playbook replacing ``pod``, or None if it is."""
    incident = postmortem.get("incident", {})
    labels = incident.get("alert", {}).get("labels", {})
    what = (incident.get("alert_name"), incident.get("playbook"))
    if what != (ALERTNAME, PLAYBOOK):
        return f"incident {incident.get('id')} is {what[0]} handled by {what[1]!r}"
    if labels.get("pod") != pod:
        return f"incident {incident.get('id')} is about pod {labels.get('pod')!r}, not {pod!r}"
    done = [
        a
        for a in postmortem.get("actions", [])
        if a.get("action") == "restart_pod" and a.get("result") == "ok"
    ]
    if not any(a.get("detail") == f"replaced pod {pod}" for a in done):
        tried = [
            (a.get("action"), a.get("result"), a.get("detail"))
            for a in postmortem.get("actions", [])
        ]
        return (
            f"incident {incident.get('id')}: no restart_pod replaced {pod} yet (actions: {tried})"
        )
    return None


def _post(args: argparse.Namespace) -> int:
    body = [alert(args.namespace, args.pod, args.container)]
    url = args.alertmanager.rstrip("/") + "/api/v2/alerts"
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status = answer.status
    except urllib.error.HTTPError as exc:
        print(f"POST {url}: {exc.code} {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"POST {url}: {exc}", file=sys.stderr)
        return 1
    print(f"POST {url}: {status}; {json.dumps(body)}")
    return 0 if status == 200 else 1


def _acted(args: argparse.Namespace) -> int:
    try:
        postmortem = json.load(sys.stdin)
    except ValueError as exc:
        print(f"stdin is not a postmortem (postmortem --format json): {exc}", file=sys.stderr)
        return 2
    why_not = acted(postmortem, args.pod)
    if why_not:
        print(why_not, file=sys.stderr)
        return 1
    print(f"incident {postmortem['incident']['id']}: {PLAYBOOK} replaced pod {args.pod}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    post = sub.add_parser("post", help="POST the alert to Alertmanager's /api/v2/alerts")
    post.add_argument(
        "--alertmanager",
        default="http://alertmanager.chaos-demo.svc:9093",
        help="Alertmanager's base URL; default %(default)s",
    )
    post.add_argument("--namespace", default="chaos-demo", help="the pod's namespace")
    post.add_argument("--pod", required=True, help="the pod the alert is about")
    post.add_argument("--container", default="api", help="its container; default %(default)s")
    check = sub.add_parser(
        "acted", help="exit 0 if the postmortem on stdin shows the pod replaced by the playbook"
    )
    check.add_argument("--pod", required=True, help="the pod the alert was about")
    args = parser.parse_args(argv)
    return _post(args) if args.command == "post" else _acted(args)


if __name__ == "__main__":
    sys.exit(main())
