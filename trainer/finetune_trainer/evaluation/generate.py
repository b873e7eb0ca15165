"""Batched generation for base and tuned with identical prompts and settings.

Prompts are rendered once with the base tokenizer's chat template (or `spec.model.chatTemplate`) and
tokenized once; both backends receive the same token ids, so base and tuned, transformers and vLLM,
see exactly the same input. Greedy decoding by default.

- `TransformersBackend`: left-padded batched `generate`. For an adapter the base weights are loaded
  once: the PEFT model answers as the base inside `disable_adapter()`.
- `VllmBackend`: `/v1/completions` with token-id prompts, requests sent concurrently with httpx, to
  a running OpenAI-compatible server (`config.vllm_url`) or to local servers it starts.
"""

from __future__ import annotations

import asyncio
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from collections.abc import Callable

from finetune_api.resolved import ArtifactLayout, ResolvedConfig

Side = Literal["base", "tuned"]
Messages = list[dict[str, Any]]


@dataclass(frozen=True)
class GenerationSettings:
    """Everything that decides an output besides the model and the prompt."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    seed: int = 0
    batch_size: int = 16
    concurrency: int = 16

    @classmethod
    def from_config(cls, config: ResolvedConfig) -> GenerationSettings:
        ev = config.spec.evaluation
        return cls(max_new_tokens=ev.max_new_tokens, temperature=ev.temperature, seed=config.spec.hyperparameters.seed)


@dataclass(frozen=True)
class ModelPair:
    """The base model and the tuned weights exactly as they will be served."""

    base_dir: str
    tuned_dir: str
    tuned_is_adapter: bool
    base_name: str
    tuned_name: str
    dtype: str = "auto"
    chat_template: str | None = None
    max_model_len: int = 256


def resolve_models(config: ResolvedConfig, need_tuned: bool = True) -> ModelPair:
    """Which weights to evaluate: `merged/` when serving merged and it exists, else what train wrote.
    `need_tuned=False` (the baseline, before training) does not require the tuned weights yet."""
    from finetune_api.contract.vllm import base_model_name, default_max_model_len

    from ..data.report import read_summary

    spec = config.spec
    layout = ArtifactLayout(config.paths.output)
    tuned = layout.tuned_weights(spec.adapter.type)
    is_adapter = spec.adapter.type != "full"
    if spec.serving.mode == "merged" and (layout.merged / "config.json").exists():
        tuned, is_adapter = layout.merged, False
    marker = "adapter_config.json" if is_adapter else "config.json"
    if need_tuned and not (tuned / marker).exists():
        raise FileNotFoundError(f"{tuned}: no {marker}; the tuned weights are missing (did training finish?)")
    return ModelPair(
        base_dir=config.paths.model, tuned_dir=str(tuned), tuned_is_adapter=is_adapter,
        base_name=base_model_name(spec, config.job), tuned_name=config.served_model_name or config.job,
        dtype=spec.model.dtype, chat_template=spec.model.chat_template, max_model_len=default_max_model_len(spec, read_summary(layout)),
    )


def load_padded_tokenizer(model_dir: str | Path, chat_template: str | None = None) -> Any:
    """The base's tokenizer, with the spec's chat template when one is given and a pad token always."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if chat_template:
        tokenizer.chat_template = chat_template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def encode_prompts(tokenizer: Any, prompts: list[Messages]) -> list[list[int]]:
    """Chat template with the generation prompt, then token ids; the template carries any BOS."""
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


class GenerationBackend(Protocol):
    name: str

    def generate(self, prompt_ids: list[list[int]], side: Side) -> list[str]: ...

    def close(self) -> None: ...


class TransformersBackend:
    """transformers `generate`, batched with left padding, on CPU or the first GPU."""

    name = "transformers"

    def __init__(self, pair: ModelPair, settings: GenerationSettings, tokenizer: Any | None = None) -> None:
        self.pair, self.settings = pair, settings
        self.tokenizer = tokenizer or load_padded_tokenizer(pair.base_dir, pair.chat_template)
        self._loaded: tuple[str, Any] | None = None

    def _load(self, path: str) -> Any:
        import torch
        from transformers import AutoModelForCausalLM

        from ..train.peft_setup import torch_dtype

        dtype = "auto" if self.pair.dtype == "auto" else torch_dtype(self.pair.dtype)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        return model.to("cuda" if torch.cuda.is_available() else "cpu").eval()

    def _model(self, side: Side) -> Any:
        """The model answering for `side`: one PEFT model for both sides of an adapter, else one
        full model at a time (the other is released first)."""
        adapter_ready = side == "tuned" or (Path(self.pair.tuned_dir) / "adapter_config.json").exists()
        key = "peft" if self.pair.tuned_is_adapter and adapter_ready else side
        if self._loaded is None or self._loaded[0] != key:
            self._loaded = None
            if key == "peft":
                from peft import PeftModel

                model = PeftModel.from_pretrained(self._load(self.pair.base_dir), self.pair.tuned_dir).eval()
            else:
                model = self._load(self.pair.base_dir if side == "base" else self.pair.tuned_dir)
            self._loaded = (key, model)
        return self._loaded[1]

    def generate(self, prompt_ids: list[list[int]], side: Side) -> list[str]:
        import contextlib

        import torch

        model = self._model(side)
        peft = self._loaded is not None and self._loaded[0] == "peft"
        quiet = model.disable_adapter() if peft and side == "base" else contextlib.nullcontext()
        tok = self.tokenizer
        order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
        outputs: list[str] = [""] * len(prompt_ids)
        sample = self.settings.temperature > 0
        torch.manual_seed(self.settings.seed)
        with quiet, torch.inference_mode():
            for start in range(0, len(order), self.settings.batch_size):
                chunk = order[start : start + self.settings.batch_size]
                width = max(len(prompt_ids[i]) for i in chunk)
                ids = torch.full((len(chunk), width), tok.pad_token_id, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for row, i in enumerate(chunk):
                    n = len(prompt_ids[i])
                    ids[row, width - n :] = torch.tensor(prompt_ids[i])
                    mask[row, width - n :] = 1
                generated = model.generate(
                    input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                    max_new_tokens=self.settings.max_new_tokens, do_sample=sample,
                    temperature=self.settings.temperature if sample else None, top_p=None, top_k=None,
                    pad_token_id=tok.pad_token_id,
                )
                for row, i in enumerate(chunk):
                    outputs[i] = tok.decode(generated[row, width:], skip_special_tokens=True)
        return outputs

    def close(self) -> None:
        self._loaded = None


Endpoint = tuple[str, str]
"""(base URL ending in /v1, model name)."""


class VllmBackend:
    """An OpenAI-compatible server's `/v1/completions`, many requests in flight."""

    name = "vllm"

    def __init__(self, endpoint: Callable[[Side], Endpoint], settings: GenerationSettings, on_close: Callable[[], None] | None = None) -> None:
        self.endpoint, self.settings, self._on_close = endpoint, settings, on_close

    def generate(self, prompt_ids: list[list[int]], side: Side) -> list[str]:
        url, model = self.endpoint(side)
        return asyncio.run(self._all(url, model, prompt_ids))

    async def _all(self, url: str, model: str, prompt_ids: list[list[int]]) -> list[str]:
        import httpx

        limit = asyncio.Semaphore(self.settings.concurrency)
        body = {
            "model": model, "max_tokens": self.settings.max_new_tokens, "temperature": self.settings.temperature,
            "seed": self.settings.seed, "skip_special_tokens": True,
        }
        async with httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=10.0)) as client:

            async def one(ids: list[int]) -> str:
                async with limit:
                    for attempt in range(3):
                        try:
                            response = await client.post(f"{url}/completions", json={**body, "prompt": ids})
                            break
                        except httpx.TransportError:
                            if attempt == 2:
                                raise
                            await asyncio.sleep(1.0 + attempt)
                if response.status_code != 200:
                    raise RuntimeError(f"{url}/completions ({model}): HTTP {response.status_code}: {response.text[:300]}")
                return str(response.json()["choices"][0]["text"])

            return list(await asyncio.gather(*(one(ids) for ids in prompt_ids)))

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()


def api_root(url: str) -> str:
    """An OpenAI-compatible base URL ending in `/v1`."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


class LocalServers:
    """Local vLLM servers for a model pair: one serving base and adapter side by side, or (full and
    merged models) one per side, started when that side is asked for and stopped after."""

    def __init__(self, pair: ModelPair, log_dir: Path | None = None) -> None:
        self.pair, self.log_dir = pair, log_dir
        self.current: tuple[str, Any] | None = None

    def _start(self, key: str, **kwargs: Any) -> Any:
        from finetune_trainer.serving.local import LocalVllmServer

        self.stop()
        log = self.log_dir / f"vllm-{key}.log" if self.log_dir else None
        server = LocalVllmServer(max_model_len=self.pair.max_model_len, dtype=self.pair.dtype, log_path=log, **kwargs)
        server.start()
        self.current = (key, server)
        server.wait_ready()
        return server

    def endpoint(self, side: Side) -> Endpoint:
        pair = self.pair
        key = "pair" if pair.tuned_is_adapter else side
        if self.current is not None and self.current[0] == key:
            server = self.current[1]
        elif key == "pair":
            server = self._start(key, model_dir=pair.base_dir, served_name=pair.base_name,
                                 adapters={pair.tuned_name: pair.tuned_dir}, base_name=pair.base_name)
        else:
            path, name = (pair.base_dir, pair.base_name) if side == "base" else (pair.tuned_dir, pair.tuned_name)
            server = self._start(key, model_dir=path, served_name=name)
        return server.url, pair.base_name if side == "base" else pair.tuned_name

    def stop(self) -> None:
        if self.current is not None:
            self.current[1].stop()
            self.current = None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def open_backend(config: ResolvedConfig, pair: ModelPair, settings: GenerationSettings, choice: str, tokenizer: Any) -> GenerationBackend:
    """The backend `choice` names. `auto`: a given vLLM server URL, else a local vLLM on a GPU, else
    transformers (on CPU, vLLM's ~50 s start and slower CPU kernels lose to batched transformers
    generation: bench/eval_throughput.py measured 227 vs 52 items/s on the tiny model)."""
    if choice == "auto":
        choice = "vllm" if config.vllm_url or (vllm_available() and cuda_available()) else "transformers"
    if choice == "transformers":
        return TransformersBackend(pair, settings, tokenizer)
    if config.vllm_url:
        root = api_root(config.vllm_url)
        return VllmBackend(lambda side: (root, pair.base_name if side == "base" else pair.tuned_name), settings)
    servers = LocalServers(pair, ArtifactLayout(config.paths.output).root / "logs")
    return VllmBackend(servers.endpoint, settings, on_close=servers.stop)
