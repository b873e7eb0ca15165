"""A local vLLM OpenAI-compatible server for a merged model or a base model plus LoRA adapters.

The flags come from `finetune_api.contract.vllm.vllm_args`, the same function the cluster's
Deployments use. The server runs as a child process group (argv list, no shell), logs to a file,
and is stopped with SIGTERM then SIGKILL, on exit and on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import httpx

from finetune_api.resolved import ArtifactLayout, ResolvedConfig
from finetune_api.contract.vllm import base_model_name, default_max_model_len
from finetune_api.contract.vllm import LoraCapacity, LoraModule, vllm_args, vllm_env
from finetune_trainer.data.report import read_summary
from finetune_trainer.failure_reason import reason_from_log
from finetune_trainer.process_group import StopRequested, stop_process_group, supervised_popen_kwargs
from finetune_api.contract.launch import free_port

VLLM_MODULE = "vllm.entrypoints.openai.api_server"
READY_TIMEOUT_SECONDS = 300.0
LOCAL_DEPLOYING_SECONDS = 600
"""`ftctl run` and `ftctl serve`: how long the local server may take to be ready and answer the first request
when the manifest leaves `spec.deadlines.deployingSeconds` unset. Larger than a quiet CPU start (30-55 s)
many times over, so a loaded laptop is not a failure; the cluster's default is the operator's setting."""
DEPLOYING_FIELD = "spec.deadlines.deployingSeconds"
EXIT_OK, EXIT_USER, EXIT_INFRA = 0, 1, 2


class ServerFailed(RuntimeError):
    """The server exited or never became ready: one line of why, and where the full log is."""

    def __init__(self, reason: str, log_path: Path) -> None:
        super().__init__(f"{reason} (log: {log_path})")
        self.reason, self.log_path = reason, log_path


def adapter_rank(adapter_dir: str | Path) -> int:
    """The LoRA rank recorded by peft in `adapter_config.json`."""
    path = Path(adapter_dir) / "adapter_config.json"
    try:
        return int(json.loads(path.read_text())["r"])
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not a LoRA adapter directory ({exc})") from exc


class LocalVllmServer:
    """`with LocalVllmServer(...) as server: server.wait_ready(); chat(server.url, ...)`."""

    def __init__(
        self,
        model_dir: str | Path,
        served_name: str | Sequence[str],
        adapters: dict[str, str] | None = None,
        base_name: str | None = None,
        port: int | None = None,
        max_model_len: int = 256,
        env: dict[str, str] | None = None,
        dtype: str = "auto",
        log_path: str | Path | None = None,
        lora_capacity: LoraCapacity | None = None,
    ) -> None:
        self.model_dir = str(model_dir)
        self.adapters = dict(adapters or {})
        names = [served_name] if isinstance(served_name, str) else list(served_name)
        if self.adapters:
            names = [base_name or names[0]]
        self.served_names = names
        self.port = port or free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.root}/v1"
        loras = [LoraModule(name, path, names[0]) for name, path in sorted(self.adapters.items())]
        rank = max((adapter_rank(p) for p in self.adapters.values()), default=None)
        self.argv = [
            sys.executable,
            "-m",
            VLLM_MODULE,
            *vllm_args(
                self.model_dir,
                names,
                port=self.port,
                host="127.0.0.1",
                dtype=dtype,
                max_model_len=max_model_len,
                cpu=True,
                lora_modules=loras,
                lora_rank=rank,
                lora_capacity=lora_capacity,
            ),
        ]
        self.env = {**os.environ, **vllm_env(cpu=True, kv_cache_gib=1, worker_in_engine=True), **(env or {})}
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkdtemp(prefix="vllm-")) / "vllm.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    # -------------------------------------------------------------------- lifecycle
    def start(self) -> LocalVllmServer:
        if self.process is not None:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._log_start = log.tell()  # the log is appended to: read this start's lines only
            log.write(("$ " + " ".join(self.argv) + "\n").encode())
            log.flush()
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, **supervised_popen_kwargs()
            )
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS, limit: str = "") -> float:
        """Block until `/health` answers 200; seconds waited. ServerFailed (the reason read from the
        log) if the server exits or the time runs out; `limit` names the setting the timeout came from."""
        self.start()
        assert self.process is not None
        started = time.monotonic()
        # one client for the whole wait: `httpx.get` builds a client and its TLS context per call (~30 ms
        # of CPU against ~1 ms), two polls a second: about 2 CPU s of `ftctl` per 30 s start
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() - started < timeout:
                if self.process.poll() is not None:
                    reason = reason_from_log(self.log_tail(200).splitlines())
                    raise ServerFailed(reason or f"vLLM exited with code {self.process.returncode}", self.log_path)
                try:
                    if client.get(f"{self.root}/health").status_code == 200:
                        return time.monotonic() - started
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
        raise ServerFailed(f"vLLM not ready after {timeout:.0f} s{f' ({limit})' if limit else ''}", self.log_path)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after `grace` seconds."""
        if self.process is not None:
            stop_process_group(self.process, grace)

    def log_tail(self, lines: int = 30) -> str:
        """The last `lines` lines this server wrote (not an earlier server's, in the same log file)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_start)
                text = log.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def models(self) -> list[str]:
        """Model ids listed by `/v1/models`."""
        response = httpx.get(f"{self.url}/models", timeout=10.0)
        response.raise_for_status()
        return [m["id"] for m in response.json()["data"]]

    def __enter__(self) -> LocalVllmServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def chat(url: str, model: str, messages: list[dict[str, str]], max_tokens: int = 32, timeout: float = 120.0) -> str:
    """One greedy chat completion through an OpenAI-compatible `url` (ending in `/v1`)."""
    response = httpx.post(
        f"{url}/chat/completions",
        json={"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0},
        timeout=timeout,
    )
    if response.status_code != 200:
        raise RuntimeError(f"chat completion for {model!r} failed: HTTP {response.status_code}: {response.text[:500]}")
    return str(response.json()["choices"][0]["message"]["content"])


# ------------------------------------------------------------------------ artifacts → server
def deploying_seconds(config: ResolvedConfig) -> int:
    """The local serve phase's deadline: the manifest's, else `LOCAL_DEPLOYING_SECONDS`."""
    return config.spec.deadlines.deploying_seconds or LOCAL_DEPLOYING_SECONDS


def vllm_log(layout: ArtifactLayout) -> Path:
    """The local server's log in a run's artifacts (`ftctl run` and `ftctl serve` append to it)."""
    return layout.root / "logs" / "vllm.log"


def server_for_run(config: ResolvedConfig, layout: ArtifactLayout, port: int | None = None, log_path: Path | None = None) -> LocalVllmServer:
    """The merged model if `merged/` exists, else the base plus the run's adapter, else a full model."""
    job = config.job
    spec = config.spec
    names = [f"{job}@{config.generation}", job]
    common: dict[str, Any] = {
        "port": port,
        "max_model_len": default_max_model_len(spec, read_summary(layout)),
        "dtype": spec.model.dtype,
        "log_path": log_path,
    }
    if (layout.merged / "config.json").exists():
        return LocalVllmServer(layout.merged, names, **common)
    if (layout.adapter / "adapter_config.json").exists():
        adapters = {job: str(layout.adapter)}
        return LocalVllmServer(config.paths.model, job, adapters=adapters, base_name=base_model_name(spec, job), **common)
    if (layout.model / "config.json").exists():
        return LocalVllmServer(layout.model, names, **common)
    raise ValueError(f"{layout.root}: no merged/, adapter/ or model/ to serve (did training finish?)")


def load_run(artifacts_dir: str | Path) -> tuple[ResolvedConfig, ArtifactLayout]:
    """The resolved config recorded in `run.json` of an artifacts directory."""
    layout = ArtifactLayout(Path(artifacts_dir))
    try:
        record = json.loads(layout.run_json.read_text())
    except OSError as exc:
        raise ValueError(f"{layout.run_json}: cannot read the run record ({exc.strerror}); is this an artifacts directory?") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{layout.run_json}: not valid JSON ({exc})") from exc
    if "config" not in record:
        raise ValueError(f"{layout.run_json}: no `config` (the resolved config) in the run record")
    return ResolvedConfig.model_validate(record["config"]), layout


def serve_artifacts(artifacts_dir: str | Path, port: int | None = None, block: bool = True) -> int:
    """`ftctl serve`: start vLLM for a run's artifacts, print the endpoint, serve until stopped.

    With `block=False` it answers one smoke request and stops. Exit codes: 0 ok, 1 nothing to serve
    there, 2 the server failed, 128 + the signal when stopped (SIGINT, SIGTERM, SIGHUP). Every exit
    stops the server's whole process group; its last line says what happened."""
    try:
        config, layout = load_run(artifacts_dir)
        server = server_for_run(config, layout, port=port, log_path=vllm_log(layout))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USER
    try:
        with server:
            print(f"starting vLLM (log: {server.log_path}) …", flush=True)
            seconds = server.wait_ready(deploying_seconds(config), DEPLOYING_FIELD)
            print(f"serving {', '.join(server.models())} at {server.url} (ready in {seconds:.0f} s)", flush=True)
            if not block:
                return EXIT_OK
            print("Ctrl-C stops the server.", flush=True)
            serve_until_stopped(server)
    except ServerFailed as exc:
        print(f"serving failed: {exc}", file=sys.stderr)
        return EXIT_INFRA
    except StopRequested as stop:
        print(f"stopped by {signal.Signals(stop.signum).name}; the server on port {server.port} is stopped", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print(f"stopped; the server on port {server.port} is stopped", file=sys.stderr)
        return 128 + signal.SIGINT


def serve_until_stopped(server: LocalVllmServer) -> NoReturn:
    """Block while a ready server runs; a stop signal ends it (StopRequested), a crash is ServerFailed."""
    assert server.process is not None  # started by wait_ready
    while (returncode := server.process.poll()) is None:
        time.sleep(1.0)
    reason = reason_from_log(server.log_tail(200).splitlines()) or f"vLLM exited with code {returncode}"
    raise ServerFailed(reason, server.log_path)


def serve_local_run(
    config: ResolvedConfig,
    layout: ArtifactLayout,
    messages: list[dict[str, str]],
    max_tokens: int = 32,
    on_answer: Callable[[str, str, float], None] | None = None,
) -> tuple[str, str, float]:
    """`ftctl run`'s last phase: serve the result, ask one question, stop. (endpoint, answer, seconds).

    With `on_answer`, it is called with the same three values while the server still runs, and the
    server then keeps serving until a stop signal (`ftctl run --keep-serving`)."""
    started = time.monotonic()
    deadline = deploying_seconds(config)
    try:
        server = server_for_run(config, layout, log_path=vllm_log(layout))
    except ValueError as exc:
        raise RuntimeError(str(exc)) from exc
    with server:
        server.wait_ready(deadline, DEPLOYING_FIELD)
        left = max(1.0, deadline - (time.monotonic() - started))
        try:
            answer = chat(server.url, config.served_model_name, messages, max_tokens=max_tokens, timeout=left)
        except httpx.TimeoutException:
            raise RuntimeError(
                f"no answer from {server.url} within {deadline} s of starting vLLM ({DEPLOYING_FIELD})"
            ) from None
        except httpx.HTTPError as exc:
            raise RuntimeError(f"chat request to {server.url} failed: {exc}") from exc
        seconds = time.monotonic() - started
        if on_answer is not None:
            on_answer(server.url, answer, seconds)
            try:
                serve_until_stopped(server)
            except ServerFailed as exc:
                raise RuntimeError(str(exc)) from exc
    return server.url, answer, seconds
