"""A canary on real vLLM CPU servers (issue 16 item 5, DESIGN.md §5.4): one that does worse is rolled back
and one that does as well is promoted, by the operator, from what the arms' vLLM servers measured.

Two jobs pass their training on kwok nodes (`PodDriver`, evaluation off: the arms, not the gates, are
under test) and each deploys a canary: its tuned arm `<job>-serve` and its base arm `<job>-base`, one real
vLLM CPU server each, run by the local pod runner (each pod has its own address, so all four listen on
8000), both behind the job's stable Service. The test plays the clients: it sends the same greedy chat
requests to every ready address of each stable Service's EndpointSlice, one at a time and alternating the
arms' order (so neither is favoured), until the operator has judged both canaries from the arms'
`/metrics`. Both jobs have the same thresholds.

Why one does worse, for a real reason: both jobs serve a merged model (`serving.mode: merged`, merged by
the trainer's merge), with the same thresholds and the same requests; what differs is the adapter merged:
- `steady`: an untrained adapter (peft's B = 0): the base's own function through the merged path, so it
  answers as the base does (two or three tokens, then end of sequence) in the same time → Promoted.
- `runaway`: an adapter whose B is random too, a fine-tune that lost the base's stop behaviour: it
  rambles on to 35-64 tokens where the base stops after two or three, so each answer takes many times
  longer end to end (vLLM's `vllm:e2e_request_latency_seconds`) → rolled back on latency, `Rejected`.
`maxLatencyRatio` is 5: half the runaway's smallest gap seen (10.8 at p50), and above the noise between two
equal servers on a loaded machine (at 3, one run of `steady` at load 20 was rolled back on p95, whose estimate
over 30 requests rests on the slowest two).
vLLM's default latency buckets start at 0.3 s, coarser than these answers, so both jobs set
`--custom-histogram-buckets` (a vLLM 0.32 flag, through `spec.serving.args`) to 10 % steps: the
analysis reads the same histogram, only finer.

`steady` also grades both arms on a shadow sample (`shadowGrading`): the operator's shadow Job, the real
trainer run by the pod runner, sends the first held-out prompts of the quickstart's eval set to each
arm's own Service and scores the answers with a `text_similarity` grader (fuzzy ratio to the reference:
above 0 for any answer with a character in common); the same answers give the same grade on both arms,
and the promotion states both.

The test asserts the verdicts (whose numbers are the operator's, from vLLM's histograms and the shadow
Job's summary), the routing that follows, and the counts the operator read against the requests sent.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from finetune_api import FineTuneJob
from finetune_operator.builders.serving import tuned_model_dir
from finetune_operator.settings import OperatorSettings
from finetune_trainer.tiny_model import build_tiny_model
from finetune_trainer.train.merge import merge_adapter
from tests.api.test_operator import events_of, ftj
from tests.harness.cluster import CACHE_DIR
from tests.harness.demo import QUICKSTART_DATA, host_mount_root
from tests.harness.operator import SERVING_API_KEY, Operator, PodDriver, get, setup_namespace, status, wait_for
from tests.harness.podrunner import NODE_SELECTOR, TOLERATIONS
from tests.harness.summaries import PREPARED, TRAINED
from tests.unit.trainer.adapters import untrained_adapter

pytestmark = pytest.mark.e2e

LATENCY_BUCKETS = [round(0.005 * 1.1**k, 4) for k in range(90)]
"""5 ms to 24 s in 10 % steps (vLLM's defaults: 0.3, 0.5, 0.8, … s)."""
CANARY = {"weight": 50, "durationSeconds": 10, "minRequests": 30, "timeoutSeconds": 400, "maxLatencyRatio": 5}
ADAPTERS = {"steady": True, "runaway": False}
"""Job name → whether its merged adapter's B is zero (untrained) or random."""
SHADOW_GRADING = {"graders": ["similar"], "items": 4, "maxScoreDrop": 0.05}
"""`steady`'s shadow grading: 4 held-out prompts to each arm (each arm's window counts them too)."""
MAX_TOKENS = 64
PROMPTS = ("Hi, my invoice is wrong, please help.", "My password reset link does not work.", "Hello")
SERVE_TIMEOUT = 600


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """The base model, and per job its adapter merged into it by the trainer's merge; built once."""
    model = build_tiny_model(CACHE_DIR / "models" / "tiny-chat")
    work = tmp_path_factory.mktemp("canary-artifacts")
    return model, {name: merge_adapter(model, untrained_adapter(model, work / f"{name}-adapter", zero_b=zero_b),
                                       work / f"{name}-merged", "float32") for name, zero_b in ADAPTERS.items()}


def canary_job(name: str, namespace: str) -> dict:
    serving = {"mode": "merged", "replicas": 1, "gpus": 0, "cpu": "1", "memory": "4Gi", "maxModelLen": 256,
               "nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS, "canary": CANARY,
               "args": ["--custom-histogram-buckets", json.dumps({"request_latency": LATENCY_BUCKETS})]}
    spec = {"model": {"uri": "pvc://models/tiny-chat", "name": "tiny-chat", "dtype": "float32"},
            "evaluation": {"enabled": False}, "serving": serving}
    if name == "steady":
        serving["canary"] = {**CANARY, "shadowGrading": SHADOW_GRADING}
        spec["datasets"] = {"train": {"uri": "pvc://data/train.jsonl"}, "eval": {"uri": "pvc://data/eval.jsonl"}}
        spec["evaluation"] = {"enabled": False, "graders": [{"name": "similar", "type": "text_similarity",
                                                                  "similarity": "fuzzy_ratio"}]}
    return {**ftj(name, **spec), "metadata": {"name": name, "namespace": namespace}}


def canary_of(cluster, namespace: str, name: str) -> dict:
    return ((status(cluster, namespace, name).get("serving") or {}).get("canary")) or {}


def arm_addresses(cluster, namespace: str, service: str) -> dict[str, str]:
    """Ready addresses behind the stable Service, by arm (`tuned`/`base`, from each pod's label)."""
    slices = json.loads(cluster.kubectl("get", "endpointslices", "-n", namespace, "-l",
                                        f"kubernetes.io/service-name={service}", "-o", "json").stdout)["items"]
    arms = {}
    for endpoint in (e for s in slices for e in s.get("endpoints") or []):
        if (endpoint.get("conditions") or {}).get("ready"):
            pod = get(cluster, namespace, "pod", endpoint["targetRef"]["name"]) or {}
            arm = ((pod.get("metadata") or {}).get("labels") or {}).get("finetune.dev/arm")
            if arm:
                arms[arm] = endpoint["addresses"][0]
    return arms


def complete(address: str, model: str, prompt: str) -> int | None:
    """One client request through the Service's address: its HTTP status, None if it did not connect."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS,
            "temperature": 0}
    try:
        response = httpx.post(f"http://{address}:8000/v1/chat/completions", json=body, timeout=120,
                              headers={"Authorization": f"Bearer {SERVING_API_KEY}"})
    except httpx.TransportError:
        return None
    return response.status_code


def analyzing(cluster, namespace: str) -> set[str]:
    """The jobs whose canary is still being analysed (one read for all of them)."""
    jobs = json.loads(cluster.kubectl("get", "finetunejobs", "-n", namespace, "-o", "json").stdout)["items"]
    return {j["metadata"]["name"] for j in jobs
            if (((j.get("status") or {}).get("serving") or {}).get("canary") or {}).get("state") == "Analyzing"}


def send_until_judged(cluster, namespace: str, addresses: dict[str, dict[str, str]],
                      timeout: float) -> dict[str, Counter[tuple[str, int | None]]]:
    """The clients: rounds of one request to every arm of every job still analysed, one request at a time
    (concurrent requests finish in the order the CPU serves them, which would favour one arm), the order
    reversed every round, until each canary has its verdict; per job, the (arm, HTTP status) counts."""
    sent: dict[str, Counter[tuple[str, int | None]]] = {name: Counter() for name in addresses}
    deadline = time.monotonic() + timeout
    for round_number, prompt in enumerate(itertools.cycle(PROMPTS)):
        if not (live := analyzing(cluster, namespace)):
            return sent
        assert time.monotonic() < deadline, f"no verdict within {timeout} s: {sent}"
        targets = [(name, arm, address) for name in sorted(live) for arm, address in sorted(addresses[name].items())]
        for name, arm, address in targets[::-1] if round_number % 2 else targets:
            sent[name][(arm, complete(address, name, prompt))] += 1
    return sent


def test_a_runaway_canary_is_rolled_back_and_a_steady_one_promoted(cluster, local_runner, namespace,
                                                                    operator_kubeconfig, tmp_path, tuned):
    setup_namespace(cluster, namespace)
    model, merged = tuned
    mount_root = host_mount_root(cluster, namespace, tmp_path / "pvc", ("models", "data", "finetune-artifacts"))
    shutil.copytree(model, mount_root / "models" / "tiny-chat")
    shutil.copy(QUICKSTART_DATA / "eval.jsonl", mount_root / "data" / "eval.jsonl")
    settings = OperatorSettings(pvc_mount_root=str(mount_root))
    for name, model_dir in merged.items():
        shutil.copytree(model_dir, tuned_model_dir(FineTuneJob.model_validate(canary_job(name, namespace)), settings))

    pods = PodDriver(cluster, namespace)
    pods.on("prepare", 0, PREPARED)
    pods.on("train", 0, TRAINED)
    operator = Operator(operator_kubeconfig, tmp_path / "operator.log", FT_CPU_RUNTIME="true", FT_QUEUE_MODE="none",
                        FT_PVC_MOUNT_ROOT=str(mount_root)).start()
    try:
        for name in ADAPTERS:
            cluster.apply(canary_job(name, namespace))

        def started() -> bool:
            for name in ADAPTERS:
                current = status(cluster, namespace, name)
                assert current.get("phase") not in ("Failed", "Rejected"), (
                    f"{name}: {json.dumps(current, indent=1)[:3000]}\noperator log:\n{operator.log_tail(40)}")
                if not (current.get("phase") == "Serving" and canary_of(cluster, namespace, name).get("readAt")):
                    return False
            return True

        # both canaries start once their four servers answer; the analysis window opens at its first reading
        wait_for("both canaries analysing", started, timeout=SERVE_TIMEOUT, interval=2)
        addresses = {}
        for name in ADAPTERS:
            canary = canary_of(cluster, namespace, name)
            assert (canary["split"], canary["share"], canary["tunedReplicas"], canary["baseReplicas"]) == (
                "Replicas", 50, 1, 1), canary
            addresses[name] = wait_for(f"{name}'s two arms behind its Service", lambda name=name: (
                a := arm_addresses(cluster, namespace, name)).keys() == {"tuned", "base"} and a)
        sent = send_until_judged(cluster, namespace, addresses, timeout=CANARY["timeoutSeconds"])

        rolled_back = status(cluster, namespace, "runaway")
        assert rolled_back["phase"] == "Rejected", (rolled_back, sent, operator.log_tail(40))
        promoted = canary_of(cluster, namespace, "steady")
        assert promoted["state"] == "Promoted", (promoted["verdict"], sent)
        # every request answered, but those that met an arm taken out after its verdict
        assert {code for counts in sent.values() for (_, code) in counts} <= {200, None}, sent

        assert rolled_back["reason"] == "CanaryRolledBack", rolled_back
        assert rolled_back["message"].startswith("canary rolled back on latencyP"), rolled_back["message"]
        assert "on the tuned arm vs" in rolled_back["message"] and "maxLatencyRatio 5" in rolled_back["message"]
        assert promoted["verdict"].startswith("tuned arm as good as the base: HTTP 5xx 0.0% vs 0.0%"), promoted
        # the shadow Job's grades: the untrained adapter answers as the base does, so both arms score the same
        grades = re.search(r"; shadow grades \(4 prompt\(s\), tuned vs base\): similar ([0-9.]+) vs ([0-9.]+)$",
                           promoted["verdict"])
        assert grades and grades.group(1) == grades.group(2) and float(grades.group(1)) > 0, promoted["verdict"]
        assert status(cluster, namespace, "steady")["phase"] == "Serving"

        # the operator's counts are the requests sent in its window: the clients' and, for steady, the shadow
        # Job's; enough, and never more
        for name, canary in (("runaway", rolled_back["serving"]["canary"]), ("steady", promoted)):
            shadow = SHADOW_GRADING["items"] if name == "steady" else 0
            for arm in ("tuned", "base"):
                assert CANARY["minRequests"] <= canary[f"{arm}Requests"] <= sent[name][(arm, 200)] + shadow, (
                    name, canary, sent)

        # the verdicts route: everything to the base (rolled back) or to the tuned model (promoted)
        def routed(name: str, share: int, replicas: tuple[int, int]) -> bool:
            deployments = tuple((get(cluster, namespace, "deployment", d) or {}).get("spec", {}).get("replicas")
                                for d in (f"{name}-serve", f"{name}-base"))
            return canary_of(cluster, namespace, name).get("share") == share and deployments == replicas

        wait_for("runaway routed to its base", lambda: routed("runaway", 0, (0, 1)), timeout=60)
        wait_for("steady routed to its tuned model", lambda: routed("steady", 100, (1, 0)), timeout=60)
        assert {"CanaryStarted", "CanaryRolledBack", "CanaryRouted"} <= set(events_of(cluster, namespace, "runaway"))
        assert {"CanaryStarted", "CanaryPromoted", "CanaryRouted"} <= set(events_of(cluster, namespace, "steady"))
    finally:
        for name in ADAPTERS:
            cluster.kubectl("delete", "finetunejob", name, "-n", namespace, "--wait=false", check=False)
        pods.close()
        operator.stop()
