"""The operator's backfill decisions and Job rendering, pure and fast: depths, Job names, the Job made
from the chart's own scraper CronJob, and the Backfilled condition for every Job and coverage state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptoviz_operator.backfill import (
    Coverage,
    JobSettings,
    JobState,
    job_name,
    job_state,
    needs_job_state,
    parse_days,
    plan,
    render_job,
    wanted_days,
)
from test_chart import NAMESPACE, docs_of, helm_template

NOW = datetime(2025, 2, 12, tzinfo=UTC)
NS = NAMESPACE
SETTINGS = JobSettings(namespace=NS, ttl_seconds=600, active_deadline_seconds=1800, backoff_limit=3)


def tc(name: str = "btc", namespace: str = NS, status: dict | None = None, **spec) -> dict:
    return {
        "apiVersion": "cryptoviz.io/v1alpha1",
        "kind": "TrackedCrypto",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}-{namespace}", "generation": 1},
        "spec": {"symbol": "BTC", **spec},
        "status": status or {},
    }


def chart_cronjob() -> dict:
    """The scraper CronJob exactly as the chart renders it (what the operator reads in a cluster)."""
    rendered = helm_template({})
    assert rendered.returncode == 0, rendered.stderr
    return next(
        d for d in docs_of(rendered.stdout) if d["kind"] == "CronJob" and d["metadata"]["name"].endswith("scraper")
    )


@pytest.fixture(scope="module")
def cronjob() -> dict:
    return chart_cronjob()


@pytest.mark.parametrize(("value", "days"), [("0", 0), (0, 0), ("30d", 30), ("365d", 365), (90, 90), ("1d", 1)])
def test_depths(value, days):
    assert parse_days(value) == days


@pytest.mark.parametrize("value", ["366d", 400, -1, "4w", "090d", "30", True, None, 1.5, ""])
def test_bad_depths_say_what_is_allowed(value):
    with pytest.raises(ValueError, match="backfill must be"):
        parse_days(value)


def test_the_chart_default_applies_only_without_spec_backfill():
    assert wanted_days({}, 30) == 30
    assert wanted_days({"backfill": "0"}, 30) == 0
    assert wanted_days({"backfill": "90d"}, 0) == 90


def test_job_names_are_stable_per_object_and_depth_and_valid_labels():
    obj = tc()
    assert job_name(obj, 30) == job_name(tc(), 30)
    assert job_name(obj, 30) != job_name(obj, 90)
    assert job_name(obj, 30) != job_name(tc(namespace="other"), 30)  # another uid
    long = job_name(tc(name="a.very-long-name." + "x" * 300), 30)
    assert len(long) <= 63 and long.startswith("a-very-long-name-") and "." not in long


def test_the_job_runs_the_scraper_pod_as_the_cronjob_has_it(cronjob):
    obj = tc(backfill="90d")
    job = render_job(obj, 90, cronjob, SETTINGS)
    scraper = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["backfill"]
    env = {e["name"]: e for e in container["env"]}
    assert env["BACKFILL_DAYS"]["value"] == "90" and env["BACKFILL_SYMBOLS"]["value"] == "BTC"
    for name in ("NATS_URL", "SCRAPER_CONFIG", "INGESTER_URL", "CMC_API_KEY", "COINGECKO_API_KEY", "LOG_FORMAT"):
        assert env[name] == next(e for e in scraper["containers"][0]["env"] if e["name"] == name)
    assert env["CMC_API_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is True  # a Secret ref, never a value
    assert container["image"] == scraper["containers"][0]["image"]
    assert container["securityContext"] == scraper["containers"][0]["securityContext"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"] == scraper["securityContext"] and pod["securityContext"]["runAsNonRoot"] is True
    assert (
        pod["volumes"] == scraper["volumes"] and container["volumeMounts"] == scraper["containers"][0]["volumeMounts"]
    )
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "backfill" and labels["cryptoviz.io/trackedcrypto"] == "btc"
    assert labels["app.kubernetes.io/instance"] == "cv"
    meta = job["metadata"]
    assert (meta["name"], meta["namespace"]) == (job_name(obj, 90), NS)
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "cryptoviz.io/v1alpha1",
            "kind": "TrackedCrypto",
            "name": "btc",
            "uid": "uid-btc-crypto",
            "controller": True,
        }
    ]
    spec = job["spec"]
    assert (spec["ttlSecondsAfterFinished"], spec["activeDeadlineSeconds"], spec["backoffLimit"]) == (600, 1800, 3)
    assert render_job(obj, 90, cronjob, SETTINGS) == job  # pure: same inputs, same Job
    assert cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["scrape", "--once"]


def test_a_job_for_an_object_in_another_namespace_has_no_owner(cronjob):
    job = render_job(tc(namespace="team-a"), 30, cronjob, SETTINGS)
    assert "ownerReferences" not in job["metadata"] and job["metadata"]["namespace"] == NS
    assert job["metadata"]["annotations"]["cryptoviz.io/trackedcrypto-namespace"] == "team-a"


def test_a_cronjob_without_a_pod_template_is_refused():
    with pytest.raises(ValueError, match="no pod template"):
        render_job(tc(), 30, {"spec": {"jobTemplate": {}}}, SETTINGS)


def test_job_states():
    assert job_state({"metadata": {"name": "j"}, "status": {"active": 1}}) == JobState("j", "Running")
    done = {"metadata": {"name": "j"}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert job_state(done) == JobState("j", "Complete")
    failed = {
        "type": "Failed",
        "status": "True",
        "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit",
    }
    assert job_state({"metadata": {"name": "j"}, "status": {"conditions": [failed]}}).message.startswith("Job has")


def coverage(first: datetime, last: datetime = NOW, gaps: list | None = None) -> Coverage:
    iso = "%Y-%m-%dT%H:%M:%SZ"
    return Coverage(
        (
            {
                "symbol": "BTC",
                "first": first.strftime(iso),
                "last": last.strftime(iso),
                "gaps": [{"start": a.strftime(iso), "end": b.strftime(iso)} for a, b in gaps or []],
            },
        )
    )


def test_covered_days_are_the_span_minus_the_gaps_inside_the_window():
    cov = coverage(NOW - timedelta(days=40), gaps=[(NOW - timedelta(days=3), NOW - timedelta(days=1))])
    assert cov.covered_days(NOW - timedelta(days=30), NOW) == pytest.approx(28)
    assert cov.first == NOW - timedelta(days=40)
    assert Coverage().first is None and Coverage().covered_days(NOW - timedelta(days=1), NOW) == 0


def test_a_new_object_starts_a_job_and_says_so():
    p = plan(tc(), active=True, inactive_reason="Paused", days=30, job=None, coverage=None, now=NOW)
    assert p.create_days == 30
    assert p.condition == ("False", "Running", f"backfill of 30 days started (job {job_name(tc(), 30)})")
    assert p.history == {"days": 30, "job": job_name(tc(), 30)}


def _after(days: int, reason: str | None = None, **history) -> dict:
    status = {"history": {"days": days, "job": job_name(tc(), days), **history}}
    if reason:
        status["conditions"] = [{"type": "Backfilled", "status": "True", "reason": reason, "message": "m"}]
    return tc(status=status)


def test_progress_follows_the_job_and_the_coverage():
    name = job_name(tc(), 30)
    cov = coverage(NOW - timedelta(days=28))
    running = plan(
        _after(30), active=True, inactive_reason="", days=30, job=JobState(name, "Running"), coverage=cov, now=NOW
    )
    assert running.create_days is None
    assert running.condition == (
        "False",
        "Running",
        f"backfill of 30 days running (job {name}): history from {(NOW - timedelta(days=28)):%Y-%m-%d}, 28 of 30 days",
    )
    assert running.history["from"] == (NOW - timedelta(days=28)).strftime("%Y-%m-%dT%H:%M:%SZ")
    full = coverage(NOW - timedelta(days=31))
    done = plan(
        _after(30), active=True, inactive_reason="", days=30, job=JobState(name, "Complete"), coverage=full, now=NOW
    )
    assert done.condition[:2] == ("True", "Complete") and "30 of 30 days" in done.condition[2]
    failed = plan(
        _after(30),
        active=True,
        inactive_reason="",
        days=30,
        job=JobState(name, "Failed", "backoff"),
        coverage=None,
        now=NOW,
    )
    assert failed.condition == ("False", "Failed", f"job {name} failed: backoff; coverage not known yet")
    down = Coverage(error="connection refused")
    unknown = plan(
        _after(30), active=True, inactive_reason="", days=30, job=JobState(name, "Running"), coverage=down, now=NOW
    )
    assert "coverage unknown: connection refused" in unknown.condition[2] and "from" not in unknown.history


def test_finished_jobs_are_not_read_again_and_their_ttl_cleanup_changes_nothing():
    finished = _after(30, "Complete")
    assert needs_job_state(finished) is None and needs_job_state(_after(30)) == job_name(tc(), 30)
    gone = plan(
        finished,
        active=True,
        inactive_reason="",
        days=30,
        job=None,
        coverage=coverage(NOW - timedelta(days=30)),
        now=NOW,
    )
    assert gone.create_days is None and gone.condition[:2] == ("True", "Complete")
    lost = plan(_after(30), active=True, inactive_reason="", days=30, job=None, coverage=None, now=NOW)
    assert lost.condition[:2] == ("Unknown", "JobGone")
    failed = _after(30, "Failed")
    assert plan(failed, active=True, inactive_reason="", days=30, job=None, coverage=None, now=NOW).condition is None


def test_only_a_deeper_backfill_starts_another_job():
    deeper = plan(_after(30, "Complete"), active=True, inactive_reason="", days=90, job=None, coverage=None, now=NOW)
    assert deeper.create_days == 90 and deeper.history["job"] == job_name(tc(), 90)
    shallower = plan(_after(90, "Complete"), active=True, inactive_reason="", days=30, job=None, coverage=None, now=NOW)
    assert shallower.create_days is None and shallower.history["days"] == 90


def test_off_paused_and_rejected_objects_start_nothing():
    off = plan(tc(backfill="0"), active=True, inactive_reason="", days=0, job=None, coverage=None, now=NOW)
    assert off.create_days is None and off.condition == ("False", "Disabled", "backfill is off (spec.backfill is 0)")
    default_off = plan(tc(), active=True, inactive_reason="", days=0, job=None, coverage=None, now=NOW)
    assert "the chart's backfill.days is 0" in default_off.condition[2]
    paused = plan(tc(), active=False, inactive_reason="Paused", days=30, job=None, coverage=None, now=NOW)
    assert paused.create_days is None and paused.condition == ("False", "Paused", "not backfilled: paused")
    kept = plan(
        _after(30, "Complete"), active=False, inactive_reason="Paused", days=30, job=None, coverage=None, now=NOW
    )
    assert kept.condition is None  # a paused coin keeps the history it has
