"""The model service's SLOs, and the Prometheus rules that watch them (monitoring/rules/slo.yaml).

Each SLO is a ratio of bad events to all events per model, and an objective over 30 days. Its
rules are a recording rule of the ratio over each window below, and two multi-window burn-rate
alerts as in Google's SRE workbook ("Alerting on SLOs", table 5-8): a page when 2% of the
month's budget goes in an hour or 5% in six hours, a ticket when 10% goes in a day or in three
days, each long window confirmed by a short one (1/12 of it) so that an alert ends soon after
the bad events do.
"""

from __future__ import annotations

import dataclasses

from monitoring import series

DOCS = "docs/monitoring.md"


@dataclasses.dataclass(frozen=True)
class Burn:
    long: str
    short: str
    factor: float  # times the rate that spends the whole budget in 30 days


PAGE = (Burn("1h", "5m", 14.4), Burn("6h", "30m", 6))
TICKET = (Burn("1d", "2h", 3), Burn("3d", "6h", 1))
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


def over(template: str, window: str) -> str:
    """A rate query with its window filled in (`{w}`)."""
    return template.replace("{w}", window)


@dataclasses.dataclass(frozen=True)
class SLO:
    name: str  # availability, latency: the alerts' `slo` label
    title: str  # the alerts' name: Fmnist<Title>BudgetBurn{Fast,Slow}
    objective: float
    record: str  # the ratio's recording rule, without the `:ratio_rate<window>` suffix
    bad: str  # PromQL of the bad events' rate by model_name, `{w}` where the window goes
    total: str  # PromQL of all events' rate by model_name
    statement: str  # the SLO in one sentence (docs, alerts)
    counted: str  # the events the ratio is over
    noun: str  # the bad events, in the alerts' summary
    what: str  # what the bad calls were, in the alerts' description

    @property
    def budget(self) -> float:
        return round(1 - self.objective, 10)

    def ratio(self, window: str) -> str:
        return f"{self.record}:ratio_rate{window}"

    def recording_rules(self) -> list[dict]:
        return [
            {"record": self.ratio(w), "expr": f"(\n  {over(self.bad, w)}\n)\n/\n{over(self.total, w)}\n"}
            for w in WINDOWS
        ]

    def alert(self, speed: str) -> dict:
        burns, severity, wait = (PAGE, "critical", "2m") if speed == "Fast" else (TICKET, "warning", "15m")
        terms = [
            f"(\n  {self.ratio(b.long)} > ({b.factor:g} * {self.budget:g})\n  and\n"
            f"  {self.ratio(b.short)} > ({b.factor:g} * {self.budget:g})\n)"
            for b in burns
        ]
        name = f"Fmnist{self.title}BudgetBurn{speed}"
        how = "fast (the month's budget lasts days at this rate)" if speed == "Fast" else "over a day or more"
        return {
            "alert": name,
            "expr": "\nor\n".join(terms) + "\n",
            "for": wait,
            "labels": {"severity": severity, "slo": self.name},
            "annotations": {
                "summary": f"{{{{ $labels.model_name }}}}: {self.noun} spend the {self.name} budget {how}",
                "description": (
                    f"{{{{ $value | humanizePercentage }}}} of the {self.counted} to {{{{ $labels.model_name }}}} were "
                    f"{self.what}. SLO: {self.statement}"
                ),
                "runbook": f"{DOCS}#{name.lower()}",
            },
        }

    def group(self) -> dict:
        """The ratios, then the alerts that read them: a group's rules are evaluated in order, so
        each alert reads the ratios of the same evaluation (groups run side by side)."""
        return {
            "name": f"fmnist-slo-{self.name}",
            "rules": [*self.recording_rules(), self.alert("Fast"), self.alert("Slow")],
        }


# Server-side failures: a client's bad input (INVALID_ARGUMENT), an unknown version or label
# (NOT_FOUND, also what a server with no version loaded answers: FmnistNoModelVersion covers
# that) and the like are the client's, not the service's.
SERVER_ERRORS = "UNKNOWN|INTERNAL|UNAVAILABLE|DEADLINE_EXCEEDED|RESOURCE_EXHAUSTED|DATA_LOSS"
COUNT = series.REQUEST_COUNT.name
LATENCY = series.REQUEST_LATENCY.name
PREDICT = 'API=~"predict|Predict"'  # REST and gRPC (model_servers/http_server.cc, prediction_service_impl.cc)
# Prometheus 3 writes a classic histogram's `le` as a float (121440.0); 2.x as exported (121440).
THRESHOLD = f'le=~"{series.LATENCY_THRESHOLD_US}(\\\\.0)?"'

AVAILABILITY = SLO(
    name="availability",
    title="Availability",
    objective=0.995,
    record="model_name:tfserving_request_errors",
    bad=f'sum by (model_name) (rate({COUNT}{{model_name!="", status=~"{SERVER_ERRORS}"}}[{{w}}]))',
    total=f'sum by (model_name) (rate({COUNT}{{model_name!=""}}[{{w}}]))',
    statement="99.5% of the calls to a model are answered without a server-side error, over 30 days.",
    counted="calls",
    noun="server-side errors",
    what="answered with a server-side error",
)
LATENCY_SLO = SLO(
    name="latency",
    title="Latency",
    objective=0.99,
    record="model_name:tfserving_predict_slow",
    bad=(
        f"sum by (model_name) (rate({LATENCY}_count{{{PREDICT}}}[{{w}}]))\n  -\n  "
        f"sum by (model_name) (rate({LATENCY}_bucket{{{PREDICT}, {THRESHOLD}}}[{{w}}]))"
    ),
    total=f"sum by (model_name) (rate({LATENCY}_count{{{PREDICT}}}[{{w}}]))",
    statement="99% of the successful predict calls to a model are answered within 121.44 ms, over 30 days.",
    counted="successful predict calls",
    noun="slow predict calls",
    what="slower than 121.44 ms",
)
SLOS = (AVAILABILITY, LATENCY_SLO)
