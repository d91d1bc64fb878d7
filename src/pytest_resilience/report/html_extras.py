"""The per-test block in the pytest-html report: chart, figures, actions, verdicts.

pytest-html (>= 4.2) inserts an ``html`` extra into the test's row with
``insertAdjacentHTML``: markup and ``<style>`` apply, ``<script>`` never runs. So the block
is static HTML with an inline SVG chart and its own scoped stylesheet. Extras are read when
the *teardown* report is logged, which is also when the scenario's timeline is complete
(faults revert at teardown): attach them to the teardown report.
"""

from __future__ import annotations

import dataclasses

from markupsafe import Markup

from ..redaction import redact, redact_document
from .charts import chart_legend, timeline_chart_svg
from .impact import error_rate_downtime_s
from .model import ScenarioResult
from .rendering import environment, template_text
from .score import scenario_score

__all__ = ["html_extras", "scenario_html"]


def html_extras(result: ScenarioResult) -> list[dict[str, str | None]]:
    """pytest-html extras for one chaos test: ``report.extras += html_extras(result)``."""
    from pytest_html import extras  # type: ignore[import-untyped]  # pytest-html ships no type hints

    return [extras.html(scenario_html(result))]


def scenario_html(result: ScenarioResult, *, include_style: bool = True) -> str:
    """The scenario block as an HTML fragment, secrets masked.

    ``include_style=False`` leaves the stylesheet out, for pages that carry it once.
    """
    chart = timeline_chart_svg(result)  # cached by identity of the caller's result
    scored = None if result.is_baseline else scenario_score(result)  # not one of the run's
    safe = redact(_without_series(result))
    html = (
        environment()
        .get_template("scenario.html")
        .render(
            s=safe,
            chart=Markup(chart),
            legend=chart_legend(result),
            downtime=error_rate_downtime_s(result),
            score=scored.score if scored else None,
            include_style=include_style,
            css=Markup(template_text("scenario.css")),
        )
    )
    return redact_document(html)


def _without_series(result: ScenarioResult) -> ScenarioResult:
    """``result`` without its samples: the block shows none of them (the chart was drawn from
    the result itself), and masking every sample was most of the cost of a big report."""
    timeline = {key: value for key, value in result.timeline.items() if key != "series"}
    return dataclasses.replace(result, timeline=timeline)
