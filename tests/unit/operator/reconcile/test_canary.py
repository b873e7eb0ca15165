"""The canary's analysis (reconcile/canary.py) on vLLM's real `/metrics` exposition, and its place in
`decide`: Deploying starts it, Serving judges it, a verdict routes 100 % or 0 % and a roll-back rejects.

`data/vllm-0.32-metrics.txt` is a real vLLM 0.32 CPU server's `/metrics` after 3 chat completions, one
request for an unknown model (404) and 3 completions; other readings rewrite its sample values in place,
so every reading keeps vLLM's exact families, labels and buckets."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from finetune_api.contract.summaries import GraderScores, ShadowSummary
from finetune_api.job import CanarySpec, ShadowGradingSpec
from finetune_operator.builders import build_serving_objects
from finetune_operator.builders.canary import canary_route
from finetune_operator.reconcile import Apply, Create, Delete, Emit, Requeue, decide, writes
from finetune_operator.reconcile.canary import (ArmMetrics, Arms, Keep, Promote, RollBack, Shadow, judge, parse_metrics,
                                                window)
from finetune_operator.reconcile.observed import ServingState
from finetune_operator.settings import OperatorSettings

from .conftest import NOW, apply_patch, children, ended, job, make_job, status_patch

pytestmark = pytest.mark.unit

REAL = (Path(__file__).parents[1] / "data" / "vllm-0.32-metrics.txt").read_text()
BOUNDS = [float(b) for b in re.findall(r'vllm:e2e_request_latency_seconds_bucket\{engine="0",le="([^"]+)"', REAL)]


def exposition(ok: int, errors: int, latencies: list[float]) -> str:
    """The real exposition with its request counters and latency histogram rewritten: `ok` 2xx and
    `errors` 5xx chat completions, and one latency observation per entry of `latencies`."""
    lines = []
    for line in REAL.splitlines():
        if line.startswith("http_requests_total{") and 'handler="/v1/' in line and "completions" in line:
            if 'handler="/v1/chat/completions"' in line and 'status="2xx"' in line:
                lines.append(line.rsplit(" ", 1)[0] + f" {float(ok)}")
                if errors:
                    lines.append(line.rsplit(" ", 1)[0].replace('status="2xx"', 'status="5xx"') + f" {float(errors)}")
            continue  # the other completion counters are dropped
        match = re.match(r'(vllm:e2e_request_latency_seconds_bucket\{engine="0",le="([^"]+)".*\}) ', line)
        if match:
            le = float(match.group(2))
            lines.append(f"{match.group(1)} {float(sum(1 for x in latencies if x <= le))}")
        elif line.startswith("vllm:e2e_request_latency_seconds_count{"):
            lines.append(line.rsplit(" ", 1)[0] + f" {float(len(latencies))}")
        elif line.startswith("vllm:e2e_request_latency_seconds_sum{"):
            lines.append(line.rsplit(" ", 1)[0] + f" {float(sum(latencies))}")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def arm(ok: int, errors: int = 0, latency: float = 0.2) -> ArmMetrics:
    return parse_metrics(exposition(ok, errors, [latency] * (ok + errors)))


SPEC = CanarySpec(weight=10, duration_seconds=300, min_requests=50, timeout_seconds=900,
                  max_error_rate_increase=0.02, max_latency_ratio=1.5)


# -- reading vLLM's /metrics ------------------------------------------------------------------------

def test_the_real_exposition_counts_completion_requests_and_5xx_only():
    metrics = parse_metrics(REAL)
    assert metrics.requests == 7  # 3 chat + 1 chat answered 404 + 3 completions; /v1/models etc. not counted
    assert metrics.errors == 0  # a 404 is the client's error, not the model's
    assert metrics.latency[-1] == (float("inf"), 6.0)  # the 404 never reached the engine
    assert [le for le, _ in metrics.latency] == sorted(BOUNDS)


def test_latency_quantiles_follow_prometheus_histogram_quantile():
    metrics = parse_metrics(exposition(4, 0, [0.1, 0.2, 0.6, 0.9]))
    # buckets 0.3 → 2, 0.5 → 2, 0.8 → 3, 1.0 → 4: p50 is rank 2, at the 0.3 bound; p95 is rank 3.8 in (0.8, 1.0]
    assert metrics.latency_quantile(0.5) == pytest.approx(0.3)
    assert metrics.latency_quantile(0.95) == pytest.approx(0.8 + 0.2 * 0.8)
    assert parse_metrics(exposition(0, 0, [])).latency_quantile(0.5) is None
    assert parse_metrics(exposition(1, 0, [9000.0])).latency_quantile(0.5) == 7680.0  # +Inf: the highest bound


def test_the_window_counts_since_its_start_per_replica():
    start = {"a@t0": arm(100), "b@t0": arm(40)}
    now = {"a@t0": arm(160, 2), "b@t1": arm(5)}  # b restarted (new container start): it counts whole
    counted = window(start, now)
    assert counted.requests == 60 + 2 + 5 and counted.errors == 2
    assert counted.latency[-1][1] == 67


# -- the verdict ----------------------------------------------------------------------------------

def test_keeps_analysing_until_duration_and_requests_are_reached():
    assert isinstance(judge(SPEC, Arms(tuned=arm(80), base=arm(700)), 100), Keep)
    short = judge(SPEC, Arms(tuned=arm(20), base=arm(700)), 400)
    assert isinstance(short, Keep) and "tuned 20, base 700 request(s) of 50 each" in short.message


def test_an_arm_short_of_requests_at_the_deadline_rolls_back():
    verdict = judge(SPEC, Arms(tuned=arm(20), base=arm(700)), 900)
    assert isinstance(verdict, RollBack) and verdict.signal == "traffic"
    assert "the tuned arm(s) answered fewer than minRequests 50 within timeoutSeconds 900" in verdict.message


def test_a_canary_that_does_as_well_is_promoted():
    verdict = judge(SPEC, Arms(tuned=arm(60, 1, 0.25), base=arm(600, 6, 0.25)), 300)
    assert isinstance(verdict, Promote)
    assert "HTTP 5xx 1.6% vs 1.0%" in verdict.message


def test_more_5xx_on_the_tuned_arm_rolls_back_naming_the_numbers():
    verdict = judge(SPEC, Arms(tuned=arm(54, 6), base=arm(600, 0)), 300)
    assert isinstance(verdict, RollBack) and verdict.signal == "errorRate"
    assert verdict.message.startswith("HTTP 5xx rate 10.0% (6/60) on the tuned arm vs 0.0% (0/600) on the base")
    assert "above maxErrorRateIncrease 2.0%" in verdict.message


def test_slower_tuned_arm_rolls_back_on_latency():
    verdict = judge(SPEC, Arms(tuned=arm(60, 0, 2.2), base=arm(600, 0, 0.4)), 300)
    assert isinstance(verdict, RollBack) and verdict.signal == "latencyP50"
    assert "end-to-end latency p50" in verdict.message and "above maxLatencyRatio 1.5" in verdict.message


# -- shadow grading -----------------------------------------------------------------------------------

GRADED = SPEC.model_copy(update={"shadow_grading": ShadowGradingSpec(graders=["exact", "judge"], items=32,
                                                                    max_score_drop=0.05)})
AS_GOOD = (Arms(tuned=arm(60), base=arm(600)), 300)
"""Arms whose metrics promote, at the end of the duration."""


def graded(*scores: tuple[str, float, float]) -> Shadow:
    return Shadow(summary=ShadowSummary(items=32, scores=[GraderScores(grader=g, tuned=t, base=b) for g, t, b in scores]))


def test_a_grader_whose_tuned_score_drops_rolls_back_naming_the_grader_and_both_scores():
    verdict = judge(GRADED, *AS_GOOD, graded(("exact", 0.61, 0.63), ("judge", 0.40, 0.70)))
    assert isinstance(verdict, RollBack) and verdict.signal == "grader judge"
    assert verdict.message == ("grader judge on a shadow sample of 32 held-out prompt(s): 0.400 on the tuned arm vs "
                               "0.700 on the base: drop 0.300 is above maxScoreDrop 0.05")


def test_grades_are_judged_as_soon_as_they_are_in_even_before_the_window_completes():
    verdict = judge(GRADED, Arms(tuned=arm(3), base=arm(20)), 20, graded(("exact", 0.1, 0.9)))
    assert isinstance(verdict, RollBack) and verdict.signal == "grader exact"


def test_grades_within_the_margin_promote_with_the_scores_in_the_verdict():
    verdict = judge(GRADED, *AS_GOOD, graded(("exact", 0.60, 0.63), ("judge", 0.75, 0.70)))
    assert isinstance(verdict, Promote)
    assert verdict.message.endswith("shadow grades (32 prompt(s), tuned vs base): exact 0.600 vs 0.630, "
                                    "judge 0.750 vs 0.700")


def test_metrics_that_promote_wait_for_the_grades_and_their_absence_at_the_deadline_rolls_back():
    waiting = judge(GRADED, *AS_GOOD, Shadow())
    assert isinstance(waiting, Keep) and waiting.message.startswith("analyzing: waiting for the shadow grading; metrics: ")
    late = judge(GRADED, AS_GOOD[0], 900, Shadow())
    assert isinstance(late, RollBack) and late.signal == "shadowGrading"
    assert late.message == "no shadow grades within timeoutSeconds 900"
    failed = judge(GRADED, *AS_GOOD, Shadow(failure="http://demo-base.team.svc:8000/v1: HTTP 503"))
    assert isinstance(failed, RollBack) and failed.message == "the shadow grading failed: http://demo-base.team.svc:8000/v1: HTTP 503"


def test_metrics_still_roll_back_a_canary_whose_grades_pass():
    verdict = judge(GRADED, Arms(tuned=arm(54, 6), base=arm(600)), 300, graded(("exact", 0.9, 0.6)))
    assert isinstance(verdict, RollBack) and verdict.signal == "errorRate"


SHADOW_GRADING = {"graders": ["exact"], "items": 8, "maxScoreDrop": 0.1}


def test_the_analysis_creates_the_shadow_job_and_rejects_on_its_grades():
    settings = OperatorSettings()
    start = decide(canary_job("Analyzing", shadowGrading=SHADOW_GRADING), children(canary=AS_GOOD[0]), NOW, settings)
    assert Create("shadow") in start
    assert status_patch(start)["serving"]["canary"]["verdict"].startswith("analyzing: waiting for the shadow grading")

    summary = ShadowSummary(items=8, scores=[GraderScores(grader="exact", tuned=0.25, base=0.75)])
    shadow = job("demo-shadow", "succeeded", (ended(0, summary.encode()),), generation=1)
    actions = decide(canary_job("Analyzing", shadowGrading=SHADOW_GRADING), children(shadow, canary=AS_GOOD[0]),
                     NOW, settings)
    assert not any(isinstance(a, Create) for a in actions)
    patch = status_patch(actions)
    assert (patch["phase"], patch["reason"]) == ("Rejected", "CanaryRolledBack")
    assert patch["message"] == ("canary rolled back on grader exact: grader exact on a shadow sample of 8 held-out "
                                "prompt(s): 0.250 on the tuned arm vs 0.750 on the base: drop 0.500 is above "
                                "maxScoreDrop 0.1")


def test_a_failed_shadow_job_rolls_back_with_its_error_and_an_older_generations_is_replaced():
    settings = OperatorSettings()
    failure = ShadowSummary.failure("InfrastructureError", "http://demo-serve.team.svc:8000/v1: connection refused")
    broken = job("demo-shadow", "failed", (ended(2, failure.encode()),), generation=1)
    patch = status_patch(decide(canary_job("Analyzing", shadowGrading=SHADOW_GRADING), children(broken, canary=Arms()), NOW, settings))
    assert patch["message"] == ("canary rolled back on shadowGrading: the shadow grading failed: "
                                "http://demo-serve.team.svc:8000/v1: connection refused")

    stale = job("demo-shadow", "succeeded", generation=0)
    actions = decide(canary_job("Analyzing", shadowGrading=SHADOW_GRADING), children(stale), NOW, settings)
    assert Delete("Job", "demo-shadow") in actions and not any(isinstance(a, Create) for a in actions)


# -- routing ------------------------------------------------------------------------------------------

def canary_job(state: str | None = None, generation: int = 1, **canary):
    status = None
    if state is not None:
        status = {"phase": "Serving", "observedGeneration": generation,
                  "serving": {"canary": {"state": state, "generation": 1, "startedAt": "2030-01-01T11:55:00Z",
                                         "share": 25, "split": "Replicas", "tunedReplicas": 1, "baseReplicas": 3}}}
    serving = {"mode": "merged", "replicas": 4, "canary": {"weight": 25, "durationSeconds": 300, "minRequests": 50,
                                                           "timeoutSeconds": 900, **canary}}
    return make_job(status, generation=generation, serving=serving)


@pytest.mark.parametrize(("state", "gateway", "weight", "share", "replicas"), [
    (None, False, 25, 25, (1, 3)),
    ("Promoted", False, 100, 100, (4, 0)),
    ("RolledBack", False, 0, 0, (0, 4)),
    ("RolledBack", True, 0, 0, (0, 4)),
])
def test_the_route_follows_the_verdict_and_states_the_true_share(state, gateway, weight, share, replicas):
    route = canary_route(canary_job(state), OperatorSettings(gateway_api=gateway))
    assert (route.weight, route.share, (route.tuned_replicas, route.base_replicas)) == (weight, share, replicas)


def test_a_replica_ratio_states_the_share_it_really_routes():
    job = make_job(serving={"mode": "merged", "replicas": 3, "canary": {"weight": 10}})
    route = canary_route(job, OperatorSettings())
    assert route.split == "Replicas" and route.share == 33  # 1 of 3 replicas, not the 10 % asked for
    assert canary_route(job, OperatorSettings(gateway_api=True)).share == 10


def test_the_httproute_carries_the_verdicts_weights():
    objects = build_serving_objects(canary_job("Promoted"), OperatorSettings(gateway_api=True))
    route = next(o for o in objects if o["kind"] == "HTTPRoute")
    assert [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [100, 0]


def test_a_new_generation_starts_from_the_spec_weight_not_the_old_verdict():
    assert canary_route(canary_job("RolledBack", generation=2), OperatorSettings()).weight == 25


# -- in decide -------------------------------------------------------------------------------------------

def test_a_canary_reaching_serving_starts_its_analysis_with_an_event():
    job = canary_job()
    job = make_job({"phase": "Deploying", "phaseStartedAt": "2030-01-01T11:50:00Z", "observedGeneration": 1},
                   serving=job.spec.serving.to_api())
    ok = ServingState(ready=True, ready_replicas=4, smoke_ok=True, endpoint="http://demo.team.svc:8000/v1")
    actions = decide(job, children(serving=ok), NOW, OperatorSettings())
    canary = status_patch(actions)["serving"]["canary"]
    assert canary["state"] == "Analyzing" and canary["share"] == 25 and canary["split"] == "Replicas"
    assert canary["startedAt"] == "2030-01-01T12:00:00Z" and canary["generation"] == 1
    started = next(a for a in actions if isinstance(a, Emit) and a.reason == "CanaryStarted")
    assert "25% of requests to the tuned model (replica ratio: 1 tuned / 4 replicas)" in started.message
    assert Requeue(15.0) in actions


def test_analysing_records_the_counts_once_per_poll_and_comes_back():
    job = canary_job("Analyzing")
    actions = decide(job, children(canary=Arms(tuned=arm(10), base=arm(30))), NOW, OperatorSettings())
    canary = status_patch(actions)["serving"]["canary"]
    assert (canary["state"], canary["tunedRequests"], canary["baseRequests"]) == ("Analyzing", 10, 30)
    assert canary["readAt"] == "2030-01-01T12:00:00Z"
    assert Requeue(15.0) in actions and not any(isinstance(a, Apply) for a in actions)
    # the write reconciles again at once: new counts wait for the next poll instead of writing in a loop
    recorded = apply_patch(job, status_patch(actions))
    again = decide(recorded, children(canary=Arms(tuned=arm(12), base=arm(33))), NOW + dt.timedelta(seconds=4),
                   OperatorSettings())
    assert again == [Requeue(11.0)]


def test_a_canary_that_does_as_well_is_promoted_then_routed_to_100_percent():
    settings = OperatorSettings()
    job = canary_job("Analyzing")
    actions = decide(job, children(canary=Arms(tuned=arm(60), base=arm(200))), NOW, settings)
    patch = status_patch(actions)
    assert patch["serving"]["canary"]["state"] == "Promoted" and "phase" not in patch
    assert [a.reason for a in actions if isinstance(a, Emit)] == ["CanaryPromoted"]
    assert not any(isinstance(a, Apply) for a in actions)  # the weights follow once the verdict is stored

    promoted = apply_patch(job, patch)
    routed = decide(promoted, children(), NOW, settings)
    assert writes(routed)[0] == Apply("serving")
    canary = status_patch(routed)["serving"]["canary"]
    assert (canary["share"], canary["tunedReplicas"], canary["baseReplicas"]) == (100, 4, 0)
    assert decide(apply_patch(promoted, status_patch(routed)), children(), NOW, settings) == []


def test_a_canary_that_does_worse_is_rolled_back_and_rejected_with_the_reason():
    settings = OperatorSettings()
    job = canary_job("Analyzing")
    actions = decide(job, children(canary=Arms(tuned=arm(50, 10), base=arm(200))), NOW, settings)
    patch = status_patch(actions)
    assert patch["phase"] == "Rejected" and patch["reason"] == "CanaryRolledBack"
    assert patch["message"].startswith("canary rolled back on errorRate: HTTP 5xx rate 16.7% (10/60) on the tuned arm")
    assert patch["serving"]["canary"]["state"] == "RolledBack"
    warning = next(a for a in actions if isinstance(a, Emit) and a.reason == "CanaryRolledBack")
    assert warning.type == "Warning"

    rejected = apply_patch(job, patch)
    routed = decide(rejected, children(), NOW, settings)
    assert writes(routed)[0] == Apply("serving")
    assert status_patch(routed)["serving"]["canary"]["share"] == 0


def test_a_roll_back_for_lack_of_traffic_names_the_replicas_not_read():
    late = NOW + dt.timedelta(seconds=900)
    arms = Arms(tuned=ArmMetrics(), base=arm(80), unread=("demo-serve-1 (not ready)",))
    patch = status_patch(decide(canary_job("Analyzing"), children(canary=arms), late, OperatorSettings()))
    assert patch["message"] == ("canary rolled back on traffic: the tuned arm(s) answered fewer than minRequests 50 "
                                "within timeoutSeconds 900 (tuned 0, base 80 request(s)); /metrics not read from "
                                "demo-serve-1 (not ready)")


def test_the_analysis_deadline_rolls_back_even_without_readings():
    late = NOW + dt.timedelta(seconds=900)
    patch = status_patch(decide(canary_job("Analyzing"), children(), late, OperatorSettings()))
    assert patch["phase"] == "Rejected"
    assert "canary rolled back on traffic: the tuned and base arm(s) answered fewer than minRequests 50" in patch["message"]
