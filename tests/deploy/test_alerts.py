"""The alerts component: its PrometheusRule and Grafana dashboard, checked offline.

Every PromQL expression (rules and dashboard panels) must parse and may select only metrics that
a running projector and API export: the names are read from their live `/metrics`, not typed
here. promtool (Debian's `prometheus` package) checks the rules and runs the unit tests in
`alerts_test.yaml` when it is installed; without it those two tests skip and say so.
"""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
from pathlib import Path

import httpx
import jsonschema
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from orderview.settings import load_settings
from services.embedded import free_port
from tests.chaos import ApiProcess
from tests.deploy.conftest import KUBERNETES, PROMETHEUS_RULE_SCHEMA, Manifests, render_text, run
from tests.support import ORDERVIEW, outstanding, publish_lines

COMPONENT = KUBERNETES / "components" / "alerts"
PROMTOOL_TESTS = Path(__file__).with_name("alerts_test.yaml")
# Grafana's interval macros are not PromQL; a dashboard query is parsed with them replaced.
GRAFANA_MACROS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def rule_spec() -> dict:
    return yaml.safe_load((COMPONENT / "prometheusrule.yaml").read_text())


def rules() -> list[dict]:
    return [rule for group in rule_spec()["spec"]["groups"] for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads((COMPONENT / "dashboard.json").read_text())


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every alert rule and every dashboard query."""
    found = [(f"rule {r['alert']}", r["expr"]) for r in rules()]
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for macro, value in GRAFANA_MACROS.items():
                expr = expr.replace(macro, value)
            found.append((f"panel {panel['title']!r} {target['refId']}", expr))
    return found


def selected_metrics(expr: str) -> set[str]:
    """The metric names an expression selects, from its syntax tree."""
    names: set[str] = set()

    def visit(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def strict(schema: dict) -> dict:
    """A CRD schema that also refuses unknown fields (the API server would prune them
    silently: a misspelt `annotation` would just vanish)."""
    schema = copy.deepcopy(schema)

    def close(node) -> None:
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema.get("properties", {}).get("spec", {}))
    return schema


def rule_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(strict(json.loads(PROMETHEUS_RULE_SCHEMA.read_text())))


@pytest.mark.parametrize(("where", "expr"), expressions(), ids=[w for w, _ in expressions()])
def test_every_expression_parses_as_promql(where: str, expr: str) -> None:
    assert selected_metrics(expr), f"{where} selects no metric"


def test_a_broken_expression_does_not_parse() -> None:
    with pytest.raises(ValueError):
        promql_parser.parse("sum by (stream) (rate(orderview_events_applied_total[5m])")


def test_every_rule_has_a_summary_and_a_runbook_section_in_the_readme() -> None:
    readme = (KUBERNETES.parents[1] / "README.md").read_text()
    for rule in rules():
        assert rule["annotations"]["summary"], rule["alert"]
        anchor = rule["annotations"]["runbook_url"].partition("#")[2]
        assert anchor == rule["alert"].lower()
        assert f"#### {rule['alert']}\n" in readme, f"README has no runbook for {rule['alert']}"


def test_the_prometheus_rule_matches_the_operator_schema_and_a_misspelt_field_does_not() -> None:
    validator = rule_validator()
    spec = rule_spec()
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(spec)]
    assert not errors, "\n".join(errors)
    broken = copy.deepcopy(spec)
    broken["spec"]["groups"][0]["rules"][0]["annotation"] = {"summary": "misspelt"}
    assert list(validator.iter_errors(broken))
    broken = copy.deepcopy(spec)
    broken["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    assert list(validator.iter_errors(broken))


@pytest.mark.parametrize("overlay", ["production", "production-hpa"])
def test_production_overlays_carry_the_rule_and_the_labelled_dashboard(overlay: str) -> None:
    objects = Manifests(overlay, [o for o in yaml.safe_load_all(render_text(overlay)) if o])
    rule = objects.one("PrometheusRule", "orderview")
    assert rule["metadata"]["namespace"] == "orderview"
    errors = list(rule_validator().iter_errors(rule))
    assert not errors, errors
    board = objects.one("ConfigMap", "orderview-dashboard")
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(board["data"]["orderview.json"]) == dashboard()


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not installed (apt-get install prometheus): rules not unit-tested")
    return found


def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    tool = promtool()
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_spec()["spec"]["groups"]}))
    done = run(tool, "check", "rules", str(tmp_path / "rules.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_promtool_unit_tests_fire_and_stay_quiet_where_they_should(tmp_path: Path) -> None:
    tool = promtool()
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_spec()["spec"]["groups"]}))
    shutil.copy(PROMTOOL_TESTS, tmp_path / "alerts_test.yaml")
    tested = {t["alertname"] for case in yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]
              for t in case.get("alert_rule_test", [])}  # fmt: skip
    assert tested == {r["alert"] for r in rules()}, "every alert needs a promtool case"
    done = run(tool, "test", "rules", str(tmp_path / "alerts_test.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr


async def scrape(url: str) -> set[str]:
    """Every sample name of a /metrics page."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(url)).text
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


async def test_every_expression_names_only_metrics_a_running_projector_and_api_export(
    subprocess_env, pool, redis_client
) -> None:
    port = free_port()
    env = {**subprocess_env, "ORDERVIEW_METRICS_PORT": str(port)}
    settings = load_settings(env)
    good = json.dumps({"id": "e1", "type": "order.created", "tenant": "acme", "aggregate_id": 1, "seq": 1, "at": "2024-01-01T00:00:00Z", "data": {"type": "sale", "currency": "EUR", "items": []}})  # fmt: skip
    await publish_lines(redis_client, settings, [good, "not json"])
    projector = await asyncio.create_subprocess_exec(ORDERVIEW, "projector", env=env)
    api = ApiProcess(env)
    try:
        await api.ready()
        async with httpx.AsyncClient(base_url=api.base) as client:
            await client.get("/v1/orders", headers={"Authorization": "Bearer ovk_unknown"})
        exported: set[str] = set()
        for _ in range(300):
            if await outstanding(redis_client, settings) == 0:
                exported = await scrape(f"http://127.0.0.1:{port}/metrics")
                if "orderview_batch_seconds_bucket" in exported:
                    break
            await asyncio.sleep(0.1)
        exported |= await scrape(f"{api.base}/metrics")
    finally:
        projector.terminate()
        await projector.wait()
        api.stop()
    missing = {
        where: sorted(selected_metrics(expr) - exported)
        for where, expr in expressions()
        if selected_metrics(expr) - exported
    }
    assert not missing, f"metrics not exported by the projector or the API: {missing}"
