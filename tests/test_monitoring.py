"""Alerting as code: the Prometheus rules pass promtool's checks and unit tests, and the Grafana dashboard and
the rules only query metrics that the service (or a recording rule) defines."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
MONITORING = REPO / "monitoring"
RULES = MONITORING / "rules" / "pokedex.rules.yml"
DASHBOARD = MONITORING / "grafana" / "pokedex.json"
UNIT_TESTS = sorted((MONITORING / "tests").glob("*.test.yml"))
BUILTIN = {"up", "ALERTS"}  # written by Prometheus itself
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
NAME = re.compile(r"\b(?:job:)?pokedex[a-zA-Z0-9_:]*|\b(?:up|ALERTS)\b(?=\s*[{(\[]|\s*$|\s*[=!<>)])")

promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    promtool is None, reason="promtool not installed (apt-get install prometheus; .ci/run installs it)"
)


def run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, check=False)


def service_metric_names() -> set[str]:
    """Every ``pokedex_*`` metric name written in the package, with the series a histogram adds."""
    names: set[str] = set()
    for source in (REPO / "pokedex").rglob("*.py"):
        names |= set(re.findall(r"[\"'](pokedex_[a-z0-9_]+)[\"']", source.read_text(encoding="utf-8")))
    return names | {n + s for n in names for s in HISTOGRAM_SUFFIXES}


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard_exprs() -> Iterator[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]
    for annotation in dashboard["annotations"]["list"]:
        yield annotation["expr"]
    for variable in dashboard["templating"]["list"]:
        yield variable["query"]["query"].removeprefix("label_values(").rsplit(",", 1)[0]


def referenced(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)  # label values such as route=~"/predict.*" are not names
    return set(NAME.findall(without_strings))


def test_rules_and_dashboard_query_only_defined_metrics() -> None:
    recorded = {r["record"] for r in rules() if "record" in r}
    known = service_metric_names() | recorded | BUILTIN
    for needed in ("pokedex_drift_alarm", "pokedex_low_confidence_total", "pokedex_http_requests_total"):
        assert needed in known  # the scan itself works
    unknown_in_rules = {name for r in rules() for name in referenced(r["expr"])} - known
    assert not unknown_in_rules, f"rules query metrics nobody defines: {sorted(unknown_in_rules)}"
    unknown_in_dashboard = {name for e in dashboard_exprs() for name in referenced(e)} - known
    assert not unknown_in_dashboard, f"dashboard queries metrics nobody defines: {sorted(unknown_in_dashboard)}"


def test_every_alert_has_a_unit_test() -> None:
    alerts = {r["alert"] for r in rules() if "alert" in r}
    tested = {
        case["alertname"]
        for path in UNIT_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    assert alerts == tested


@needs_promtool
def test_promtool_check_rules_and_config() -> None:
    result = run(promtool, "check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    result = run(promtool, "check", "config", MONITORING / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests() -> None:
    result = run(promtool, "test", "rules", *UNIT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool has no expression checker, but it parses recording rules: one rule per dashboard query."""
    exprs = [e.replace("$__rate_interval", "5m").replace("$job", "pokedex") for e in dashboard_exprs()]
    group = {"name": "dashboard", "rules": [{"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(exprs)]}
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [group]}), encoding="utf-8")
    result = run(promtool, "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(
    shutil.which("amtool") is None, reason="amtool not installed (apt-get install prometheus-alertmanager)"
)
def test_alertmanager_config_and_routes() -> None:
    config = MONITORING / "alertmanager.yml"
    assert run("amtool", "check-config", config).returncode == 0
    for labels, receiver in (
        (["alertname=PokedexDown", "severity=critical"], "pager"),
        (["alertname=PokedexDrift", "severity=warning"], "ml-owners"),
        (["alertname=PokedexHighLatency", "severity=warning"], "team"),
    ):
        result = run("amtool", "config", "routes", "test", f"--config.file={config}", *labels)
        assert result.stdout.strip() == receiver, (labels, result.stdout, result.stderr)
