"""A canary's shadow grading (DESIGN.md §5.4): the same held-out prompts to both arms, graded alike.

The operator's Job runs `python -m finetune_trainer shadow` while the canary is analysed, with each
arm's own Service in the environment (`SHADOW_TUNED_URL_ENV`, `SHADOW_BASE_URL_ENV`) and the serving
API key (`API_KEY_ENV`). Answers are generated as the evaluation generates them (greedy unless
`evaluation.temperature`, up to `evaluation.maxNewTokens`), one request at a time, the arms in turn;
each grader of `serving.canary.shadowGrading` scores both arms' answers. A `score_model` grader
without `endpoint` asks the base arm (it serves the base model, as the evaluation's default judge does).
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from finetune_api.contract.summaries import GraderScores, ShadowSummary
from finetune_api.contract.vllm import API_KEY_ENV, SHADOW_BASE_URL_ENV, SHADOW_TUNED_URL_ENV, base_model_name
from finetune_api.resolved import ResolvedConfig

from .graders import BaseGrader, JudgeDefaults, build_grader
from .items import EvalItem, held_out_items

REQUEST_TIMEOUT_SECONDS = 300.0


class ShadowConfigError(ValueError):
    """The job has no shadow grading, or the pod was started without its arms (a user or operator error)."""


def arm_url(variable: str) -> str:
    url = os.environ.get(variable)
    if not url:
        raise ShadowConfigError(f"{variable} is not set: the operator names each arm's Service there")
    return url.rstrip("/")


def answer(client: httpx.Client, url: str, model: str, item: EvalItem, max_tokens: int, temperature: float) -> str:
    """One arm's answer to one prompt; an HTTP error is raised (the sample needs every answer)."""
    body = {"model": model, "messages": item.prompt, "max_tokens": max_tokens, "temperature": temperature}
    response = client.post(f"{url}/chat/completions", json=body)
    if response.status_code != 200:
        raise RuntimeError(f"{url}: chat completion for {model!r} failed: HTTP {response.status_code}: "
                           f"{response.text[:300]}")
    return str(response.json()["choices"][0]["message"]["content"] or "")


def run_shadow(config: ResolvedConfig) -> ShadowSummary:
    spec = config.spec
    canary = spec.serving.canary
    grading = canary.shadow_grading if canary else None
    if grading is None:
        raise ShadowConfigError("spec.serving.canary.shadowGrading is not set: nothing to grade")
    arms = {"tuned": (arm_url(SHADOW_TUNED_URL_ENV), config.job),
            "base": (arm_url(SHADOW_BASE_URL_ENV), base_model_name(spec, config.job))}
    items = held_out_items(config)[0][: grading.items]
    declared = {g.name: g for g in spec.evaluation.graders}
    key = os.environ.get(API_KEY_ENV)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    judge = JudgeDefaults(arms["base"][0], arms["base"][1])
    graders: dict[str, BaseGrader] = {}
    try:
        for name in grading.graders:
            graders[name] = build_grader(declared[name], spec.evaluation.graders, judge=judge)
        ev = spec.evaluation
        outputs: dict[str, list[str]] = {arm: [] for arm in arms}
        order = list(arms)
        with httpx.Client(headers=headers, timeout=REQUEST_TIMEOUT_SECONDS) as client:
            for i, item in enumerate(items):  # both arms in turn, the order reversed each prompt: neither
                for arm in order[::-1] if i % 2 else order:  # meets the sample's load alone
                    url, model = arms[arm]
                    outputs[arm].append(answer(client, url, model, item, ev.max_new_tokens, ev.temperature))
        rows: list[dict[str, Any]] = [item.fields for item in items]
        scores = []
        for name, grader in graders.items():
            mean = {arm: sum(r.score for r in grader.grade_batch(outs, rows)) / len(rows) for arm, outs in outputs.items()}
            scores.append(GraderScores(grader=name, tuned=mean["tuned"], base=mean["base"]))
    finally:
        for grader in graders.values():
            grader.close()
    return ShadowSummary(items=len(items), scores=scores,
                         message=f"{len(items)} held-out prompt(s) answered by each arm and graded")
