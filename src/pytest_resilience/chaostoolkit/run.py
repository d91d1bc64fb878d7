"""Run one Chaos Toolkit experiment: hypothesis, method, hypothesis, rollbacks; a journal.

The order and the statuses are chaoslib's (``run.Runner._run``): the steady-state
hypothesis gates the method, the method's activities run in order (``pauses`` before and
after, ``background`` ones in threads, ``ref`` to a declared activity), a failed activity
is recorded and the method goes on, an unexpected error aborts it, and the hypothesis
after the method says whether the system deviated.

One deliberate difference, the reason this room exists: **rollbacks always run**, also
after a failed hypothesis, an abort, Ctrl-C and SIGTERM (chaoslib skips them on
interruption and on ``failed`` with the default strategy). Before the method, the resolved
rollbacks are armed through ``arm`` (the plugin passes a ledgered fault, see
``faults/experiment_rollbacks.py``), so that even after SIGKILL ``pytest --chaos-cleanup``
plays them. ``runtime.rollbacks.strategy`` keeps its meaning where it says more than
"default": ``never`` plays none, ``deviated`` only when the experiment deviated or did not
finish (its state is then unknown).

Controls are named on the timeline and never loaded: they are the Chaos Toolkit CLI's
plug-ins (reporting, Slack ...), and the report here is ours.

Size: over 500 lines because chaoslib's run order (hypothesis, method with pauses and
background activities, hypothesis, rollbacks, journal) is one Runner that reads top to
bottom.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigError
from ..timeline import STEADY_STATE, Timeline
from .configuration import load_configuration, load_secrets, substitute
from .model import Activity, Experiment
from .providers import ActivityFailed, run_provider
from .tolerance import within_tolerance

if TYPE_CHECKING:
    from ..targets.base import Target
    from .native import NativeActions

__all__ = ["ActivityRun", "Journal", "Runner", "SLOGate", "replay_rollbacks"]

log = logging.getLogger("pytest_resilience.chaostoolkit")

EXPERIMENT_STARTED = "experiment_started"
EXPERIMENT_ENDED = "experiment_ended"
ACTIVITY = "experiment_activity"
_OUTPUT_CHARS = 2000


@dataclass
class ActivityRun:
    """One run of an activity, as in a chaoslib journal's ``run``/``rollbacks`` entries."""

    #: "hypothesis-before", "method", "hypothesis-during", "hypothesis-after", "rollback"
    phase: str
    name: str
    type: str
    status: str = "succeeded"  #: "succeeded" or "failed"
    output: Any = None
    error: str | None = None
    start: float = 0.0
    end: float = 0.0
    tolerance_met: bool | None = None
    #: what ran in place of the extension's function (``--chaostoolkit-native``), if mapped
    native: str | None = None

    def line(self) -> str:
        native = f" (native: {self.native})" if self.native else ""
        what = f"{self.phase} {self.type} {self.name!r}{native}: {self.status}"
        if self.error:
            what += f" ({self.error})"
        if self.tolerance_met is False and self.status == "succeeded":
            what += f", not within tolerance (output {_short(self.output, 300)})"
        return what


@dataclass
class Journal:
    title: str
    #: chaoslib's: "completed", "failed" (hypothesis not met before the method),
    #: "aborted" (an unexpected error), "interrupted" (Ctrl-C, SIGTERM)
    status: str = "running"
    deviated: bool = False
    steady_before: bool | None = None
    steady_after: bool | None = None
    runs: list[ActivityRun] = field(default_factory=list)
    rollbacks: list[ActivityRun] = field(default_factory=list)
    #: why rollbacks did not run (strategy); None when they ran
    rollbacks_skipped: str | None = None
    error: str | None = None
    start: float = field(default_factory=time.time)
    end: float | None = None

    @property
    def verdict(self) -> str:
        """Chaos Toolkit's final word: "deviated" wins over the status, as ``chaos run`` says."""
        return "deviated" if self.deviated else self.status

    def summary(self) -> str:
        lines = [f"experiment {self.title!r} ended {self.verdict}"]
        if self.error:
            lines.append(f"  error: {self.error}")
        for run in self.runs:
            if run.status != "succeeded" or run.tolerance_met is False:
                lines.append(f"  {run.line()}")
        if self.rollbacks_skipped:
            lines.append(f"  rollbacks not played: {self.rollbacks_skipped}")
        for run in self.rollbacks:
            lines.append(f"  {run.line()}")
        return "\n".join(lines)


class SLOJudged(Protocol):
    """One SLO check (``extension.SLOJudgement``): recorded as a journal run of type slo.
    Read-only, so a frozen dataclass is one."""

    @property
    def name(self) -> str: ...
    @property
    def met(self) -> bool: ...
    @property
    def error(self) -> str | None: ...
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...


class SLOGate(Protocol):
    """Our SLOs judged with the steady-state hypothesis (``extension.SLOChecks``)."""

    def before(self) -> Sequence[SLOJudged]: ...

    def after(self) -> Sequence[SLOJudged]: ...


class Armed(Protocol):
    """What ``arm`` returns: plays the rollbacks on :meth:`revert` (once)."""

    skip_reason: str | None

    def revert(self) -> None: ...


@dataclass
class _Context:
    """What every activity of one run shares: where it runs and the values it substitutes."""

    cwd: Path
    configuration: dict[str, Any]
    secrets: dict[str, Any]
    timeline: Timeline | None = None
    dry_run: bool = False
    native: NativeActions | None = None

    def execute(
        self, raw: Mapping[str, Any], phase: str, *, tolerance: bool = False, where: str = ""
    ) -> ActivityRun:
        activity = substitute(dict(raw), self.configuration, self.secrets)
        run = ActivityRun(phase=phase, name=str(raw.get("name", "")), type=str(raw.get("type", "")))
        mapped = self.native.maps(activity["provider"]) if self.native is not None else None
        if mapped is not None:
            run.native = mapped.ours
        pauses = activity.get("pauses") or {}
        if pauses.get("before") and not self.dry_run:
            time.sleep(float(pauses["before"]))  # the experiment's stated pause
        run.start = time.time()
        self._mark(run, "started")
        try:
            if mapped is not None and not self.dry_run:
                assert self.native is not None
                run.output = self.native.call(
                    activity["provider"],
                    where=where,
                    step=run.name,
                    phase=phase,
                    configuration=self.configuration,
                )
            elif not self.dry_run:
                run.output = run_provider(
                    activity["provider"],
                    cwd=self.cwd,
                    configuration=self.configuration,
                    secrets=self.secrets,
                    has_tolerance=tolerance,
                )
        except ActivityFailed as exc:
            run.status, run.error = "failed", str(exc)
            log.warning("%s %s failed: %s", phase, run.name, exc)
        finally:
            run.end = time.time()
        self._mark(run, "ended")
        if pauses.get("after") and not self.dry_run:
            time.sleep(float(pauses["after"]))
        return run

    def check(self, run: ActivityRun, tolerance: Any) -> bool:
        """Judge a probe's output; the run remembers the verdict."""
        if run.status != "succeeded":
            run.tolerance_met = False
        elif self.dry_run:
            run.tolerance_met = True
        else:
            tolerance = substitute(tolerance, self.configuration, self.secrets)
            run.tolerance_met = within_tolerance(
                tolerance, run.output, run_probe=self._tolerance_probe
            )
        if self.timeline is not None:
            self.timeline.mark(
                ACTIVITY, run.name, phase=run.phase, state="judged", tolerance_met=run.tolerance_met
            )
        return bool(run.tolerance_met)

    def _tolerance_probe(self, tolerance: dict[str, Any], value: Any) -> Any:
        provider = dict(tolerance["provider"])
        provider["arguments"] = {**(provider.get("arguments") or {}), "value": value}
        try:
            return run_provider(
                provider, cwd=self.cwd, configuration=self.configuration, secrets=self.secrets
            )
        except ActivityFailed:
            return False

    def _mark(self, run: ActivityRun, state: str) -> None:
        if self.timeline is None:
            return
        detail: dict[str, Any] = {"phase": run.phase, "type": run.type, "state": state}
        if run.native:
            detail["native"] = run.native
        if self.dry_run:
            detail["dry_run"] = True
        if state == "ended":
            detail.update(
                status=run.status,
                duration_s=round(run.end - run.start, 3),
                output=_short(run.output, _OUTPUT_CHARS),
            )
            if run.error:
                detail["error"] = run.error
        self.timeline.mark(
            ACTIVITY, run.name, at=run.start if state == "started" else run.end, **detail
        )


class Runner:
    """One experiment, one journal. :meth:`run` never leaves a rollback unplayed."""

    def __init__(
        self,
        experiment: Experiment,
        *,
        timeline: Timeline | None = None,
        dry_run: bool = False,
        native: NativeActions | None = None,
        slos: SLOGate | None = None,
    ) -> None:
        self.experiment = experiment
        self.timeline = timeline
        self.dry_run = dry_run
        #: extension actions run by our faults (``--chaostoolkit-native``), None: called
        self.native = native
        #: our load's SLOs, judged with the hypothesis (the pytest-resilience extension)
        self.slos = slos
        self.journal = Journal(experiment.title)
        self._ctx: _Context | None = None

    # -- configuration ---------------------------------------------------------------------

    def configure(self) -> _Context:
        """Configuration and secrets as of now (env), dynamic configuration probes run."""
        source = str(self.experiment.path)
        configuration = load_configuration(self.experiment.configuration, source=source)
        secrets = load_secrets(self.experiment.secrets, source=source)
        ctx = _Context(
            self.experiment.cwd, configuration, secrets, self.timeline, self.dry_run, self.native
        )
        for key, value in list(configuration.items()):
            if isinstance(value, dict) and value.get("type") == "probe":
                run = ctx.execute(value, "configuration", where=f"$.configuration.{key}")
                if self.dry_run:  # nothing ran: the name stays as written, as in a ${name}
                    configuration[key] = f"${{{key}}}"
                    continue
                output = run.output
                kind = value["provider"]["type"]
                if run.status != "succeeded" or (kind == "process" and output["status"] != 0):
                    raise ConfigError(
                        f"dynamic configuration probe failed: {run.error or output}",
                        source=source,
                        field=f"$.configuration.{key}",
                    )
                configuration[key] = (
                    output["stdout"].strip()
                    if kind == "process"
                    else output.get("body")
                    if kind == "http"
                    else output
                )
        self._ctx = ctx
        return ctx

    def rollback_spec(self) -> dict[str, Any]:
        """What a later process needs to play the rollbacks: JSON, no secret values."""
        ctx = self._ctx or self.configure()
        return {
            "experiment": str(self.experiment.path),
            "title": self.experiment.title,
            "cwd": str(ctx.cwd),
            "configuration": _jsonable(ctx.configuration),
            # the declaration (env names, inline values already in the file), re-read on replay
            "secrets": dict(self.experiment.secrets),
            "rollbacks": [dict(self.experiment.resolve(a).raw) for a in self.experiment.rollbacks],
            # the replay maps them too: the extension may not be installed where it runs
            "native": self.native is not None,
        }

    # -- the run ---------------------------------------------------------------------------

    def run(self, *, arm: Callable[[dict[str, Any]], Armed] | None = None) -> Journal:
        experiment, journal = self.experiment, self.journal
        ctx = self._ctx or self.configure()
        self._mark(EXPERIMENT_STARTED, controls=list(experiment.controls))
        for control in experiment.controls:
            log.info("control %r of %s is not loaded here (logged only)", control, experiment.path)
        strategy = experiment.hypothesis_strategy
        with_hypothesis = self.slos is not None or (
            experiment.hypothesis is not None and bool(experiment.hypothesis.probes)
        )
        armed: Armed | None = None
        interrupted: BaseException | None = None
        try:
            if experiment.rollbacks and experiment.rollback_strategy != "never" and arm is not None:
                armed = arm(self.rollback_spec())
            gate_met = True
            if with_hypothesis and strategy in ("default", "before-method-only", "continuously"):
                gate_met = journal.steady_before = self._hypothesis(ctx, "hypothesis-before")
            if not gate_met:
                journal.status = "failed"
            else:
                stop = threading.Event()
                during = None
                if with_hypothesis and strategy in ("during-method-only", "continuously"):
                    during = threading.Thread(
                        target=self._continuously, args=(ctx, stop), daemon=True
                    )
                    during.start()
                try:
                    self._method(ctx)
                finally:
                    stop.set()
                    if during is not None:
                        during.join(timeout=30)
                if with_hypothesis and strategy in ("default", "after-method-only", "continuously"):
                    journal.steady_after = self._hypothesis(ctx, "hypothesis-after")
                    journal.deviated = not journal.steady_after
                journal.status = "completed"
        except KeyboardInterrupt as exc:  # SIGTERM arrives as one too (plugin.py)
            journal.status, journal.error, interrupted = "interrupted", f"interrupted: {exc}", exc
        except Exception as exc:
            journal.status, journal.error = "aborted", f"{type(exc).__name__}: {exc}"
            log.error("experiment %s aborted: %s", experiment.path, exc)
        finally:
            self._finish_rollbacks(ctx, armed)
            journal.end = time.time()
            self._mark(
                EXPERIMENT_ENDED,
                status=journal.status,
                deviated=journal.deviated,
                verdict=journal.verdict,
                rollbacks=[r.line() for r in journal.rollbacks],
            )
        if interrupted is not None:
            raise interrupted
        return journal

    def _finish_rollbacks(self, ctx: _Context, armed: Armed | None) -> None:
        journal, strategy = self.journal, self.experiment.rollback_strategy
        skip = None
        if not self.experiment.rollbacks:
            skip = "the experiment declares none"
        elif strategy == "never":
            skip = "runtime.rollbacks.strategy is 'never'"
        elif strategy == "deviated" and journal.status == "completed" and not journal.deviated:
            skip = "runtime.rollbacks.strategy is 'deviated' and the experiment did not deviate"
        journal.rollbacks_skipped = skip if self.experiment.rollbacks else None
        if armed is not None:
            armed.skip_reason = skip
            if skip is None and self.dry_run:
                self.play_rollbacks()
            armed.revert()  # plays them through the ledgered fault, which closes its entry
        elif skip is None:
            self.play_rollbacks()

    def play_rollbacks(self) -> list[ActivityRun]:
        """Every rollback in order, each whatever the previous one did; returns their runs."""
        ctx = self._ctx or self.configure()
        if self.journal.rollbacks:  # played already (a second revert): do not act twice
            return self.journal.rollbacks
        for activity in self.experiment.rollbacks:
            raw = self.experiment.resolve(activity).raw
            try:
                run = ctx.execute(raw, "rollback", where=activity.where)
            except Exception as exc:  # a broken rollback must not keep the next from running
                run = ActivityRun("rollback", str(raw.get("name")), str(raw.get("type")), "failed")
                run.error = f"{type(exc).__name__}: {exc}"
            self.journal.rollbacks.append(run)
        return self.journal.rollbacks

    def _hypothesis(self, ctx: _Context, phase: str) -> bool:
        hypothesis = self.experiment.hypothesis
        met = True
        for probe in hypothesis.probes if hypothesis else ():
            resolved = self.experiment.resolve(probe)
            run = ctx.execute(resolved.raw, phase, tolerance=True, where=resolved.where)
            self.journal.runs.append(run)
            tolerance = probe.raw.get("tolerance", resolved.raw.get("tolerance"))
            if not ctx.check(run, tolerance):
                met = False
                break  # chaoslib stops at the first probe out of tolerance
        if met and self.slos is not None and phase != "hypothesis-during":
            # our SLOs after the probes: before the method they hold, after it they recover
            judged = self.slos.before() if phase == "hypothesis-before" else self.slos.after()
            slo_runs = [
                ActivityRun(
                    phase=phase,
                    name=j.name,
                    type="slo",
                    status="succeeded" if j.met else "failed",
                    error=j.error,
                    start=j.start,
                    end=j.end,
                    tolerance_met=j.met,
                )
                for j in judged
            ]
            for run in slo_runs:
                if self.timeline is not None:
                    self.timeline.mark(
                        ACTIVITY,
                        run.name,
                        at=run.end,
                        phase=phase,
                        type="slo",
                        state="judged",
                        tolerance_met=run.tolerance_met,
                        **({"error": run.error} if run.error else {}),
                    )
            self.journal.runs.extend(slo_runs)
            met = all(run.tolerance_met for run in slo_runs)
        if self.timeline is not None:
            title = hypothesis.title if hypothesis else "SLOs"
            self.timeline.mark(STEADY_STATE, title, phase=phase, met=met)
        return met

    def _continuously(self, ctx: _Context, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._hypothesis(ctx, "hypothesis-during")
            except Exception:
                log.exception("continuous hypothesis of %s failed", self.experiment.path)
                return
            stop.wait(self.experiment.hypothesis_frequency_s)

    def _method(self, ctx: _Context) -> None:
        background: list[Future[ActivityRun]] = []
        pool = None
        try:
            for activity in self.experiment.method:
                resolved: Activity = self.experiment.resolve(activity)
                if activity.background or resolved.background:
                    pool = pool or ThreadPoolExecutor(thread_name_prefix="ctk-background")
                    background.append(
                        pool.submit(ctx.execute, resolved.raw, "method", where=resolved.where)
                    )
                    continue
                self.journal.runs.append(ctx.execute(resolved.raw, "method", where=resolved.where))
            for future in background:
                self.journal.runs.append(future.result())
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    def _mark(self, kind: str, **detail: Any) -> None:
        if self.timeline is not None:
            self.timeline.mark(
                kind, self.experiment.title, path=str(self.experiment.path), **detail
            )


def replay_rollbacks(spec: Mapping[str, Any], *, target: Target | None = None) -> list[ActivityRun]:
    """Play the rollbacks a killed run armed, from its ledger spec alone; mapped actions
    (the run had ``--chaostoolkit-native``) act on ``target``."""
    source = str(spec.get("experiment", ""))
    native = None
    if spec.get("native") and target is not None:
        from .native import NativeActions

        native = NativeActions(target, None, source=source)
    ctx = _Context(
        Path(spec["cwd"]),
        dict(spec.get("configuration") or {}),
        load_secrets(spec.get("secrets") or {}, source=source),
        native=native,
    )
    runs = []
    for i, raw in enumerate(spec.get("rollbacks") or []):
        try:
            runs.append(ctx.execute(raw, "rollback", where=f"$.rollbacks[{i}]"))
        except Exception as exc:
            run = ActivityRun("rollback", str(raw.get("name")), str(raw.get("type")), "failed")
            run.error = f"{type(exc).__name__}: {exc}"
            runs.append(run)
    return runs


def _short(value: Any, limit: int) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
