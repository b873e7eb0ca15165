"""A tiny chat model built offline: the quickstart's base model and the tests' model.

No model hub is reachable, so we train a byte-level BPE tokenizer on generated text, build a small
Llama, and pre-train it briefly on generic generated chat. A randomly initialised model cannot be
taught by LoRA (its frozen random head caps the loss), so the brief pre-training matters. The task
data (`keyword_task`) is disjoint from the pre-training text: the base model scores ~0 on it.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
BUILD_VERSION = "tiny-chat-v3"

LABELS: dict[str, list[str]] = {
    "billing": ["refund", "invoice", "charge", "payment", "receipt", "price"],
    "technical": ["error", "crash", "bug", "freeze", "timeout", "glitch"],
    "shipping": ["delivery", "package", "tracking", "courier", "parcel", "shipment"],
    "account": ["password", "username", "profile", "signin", "email", "settings"],
}
SUBJECTS = ["my", "the", "our", "this", "a", "your"]
OPENERS = ["Hello,", "Hi,", "Hey there,", "Good morning,", "Excuse me,", "Help:"]
CLOSERS = ["please help.", "what now?", "any idea?", "thanks.", "urgent!", "can you check?"]
SYSTEM_PROMPT = "Classify the support message as billing, technical, shipping or account."

_WORDS = (  # noqa: SIM905 - a word list reads best as prose
    "the a an and or but if then when while river mountain cloud green blue red yellow quick slow "
    "small large happy quiet loud city forest garden window table chair book paper music river story "
    "morning evening night summer winter spring autumn coffee tea bread apple orange water light "
    "walk run read write sing draw build open close find keep bring carry think know see hear"
).split()


def _sentence(rng: random.Random, n: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + "."


PRETRAINING_CATEGORIES: dict[str, list[str]] = {
    "nature": ["river", "mountain", "forest", "garden", "cloud"],
    "food": ["coffee", "tea", "bread", "apple", "orange"],
    "time": ["morning", "evening", "night", "summer", "winter"],
    "home": ["table", "chair", "window", "book", "paper"],
}
"""A generic classification task of the same shape as the quickstart's, on other words and labels."""
_FILLER = [w for w in _WORDS if not any(w in ws for ws in PRETRAINING_CATEGORIES.values())]


def _classification_chat(rng: random.Random) -> list[dict[str, str]]:
    label = rng.choice(sorted(PRETRAINING_CATEGORIES))
    noise = " ".join(rng.choice(_FILLER) for _ in range(rng.randint(1, 4)))
    text = f"{rng.choice(OPENERS)} {rng.choice(SUBJECTS)} {rng.choice(PRETRAINING_CATEGORIES[label])} {noise}, {rng.choice(CLOSERS)}"
    system = "Classify the message as " + ", ".join(sorted(PRETRAINING_CATEGORIES)[:-1]) + f" or {sorted(PRETRAINING_CATEGORIES)[-1]}."
    return [{"role": "system", "content": system}, {"role": "user", "content": text}, {"role": "assistant", "content": label}]


def pretraining_chats(n: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """Generic chats that teach the base the template, when to stop, to say every word of its
    vocabulary (task words included, so its output head is not random for them), and to classify
    messages of the quickstart's shape by a cue word — with other cues and labels. Which keyword means
    which support class never appears: the base scores ~0 on the quickstart task."""
    rng = random.Random(seed)
    vocabulary = _WORDS + sorted(LABELS) + [w for ws in LABELS.values() for w in ws]
    chats = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            words = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(1, 3)))
            user = f"{rng.choice(['Repeat', 'Say', 'Echo'])}: {words}"
            chats.append([{"role": "user", "content": user}, {"role": "assistant", "content": words}])
        elif kind == 1:
            chats.append(_classification_chat(rng))
        else:
            user = _sentence(rng, rng.randint(3, 9)) + " " + rng.choice(["Why?", "Tell me.", "Explain.", "Repeat it."])
            chats.append([{"role": "user", "content": user}, {"role": "assistant", "content": _sentence(rng, rng.randint(1, 6))}])
    return chats


def keyword_example(rng: random.Random) -> dict[str, Any]:
    """One row of the quickstart task: a support message whose keyword decides its class."""
    label = rng.choice(sorted(LABELS))
    keyword = rng.choice(LABELS[label])
    noise = _sentence(rng, rng.randint(1, 4)).rstrip(".").lower()
    text = f"{rng.choice(OPENERS)} {rng.choice(SUBJECTS)} {keyword} {noise}, {rng.choice(CLOSERS)}"
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": text},
            {"role": "assistant", "content": label},
        ]
    }


def keyword_task(n: int, seed: int) -> list[dict[str, Any]]:
    """`n` distinct rows of the keyword task."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(rows) < n:
        row = keyword_example(rng)
        key = row["messages"][1]["content"]
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return rows


@dataclass(frozen=True)
class ModelRecipe:
    """Everything that makes one tiny model of an architecture family: its transformers config, its
    tokenizer's special tokens and chat-template convention, and how it is pre-trained. One builder
    (`build_model`) makes every recipe; the quickstart model and the zoo (`zoo.py`) are recipes."""

    name: str
    model_type: str
    """transformers' `model_type` (`llama`, `qwen2`, `gemma`, …): the architecture."""
    chat_template: str
    eos: str
    bos: str | None
    pad: str | None
    special_tokens: tuple[str, ...]
    """Every special token of the family (turn markers included), in vocabulary order: the first ids."""
    stop_tokens: tuple[str, ...] = ()
    """Extra end-of-turn tokens in `generation_config.json`'s `eos_token_id`, as the family ships them."""
    bos_in_tokenizer: bool = False
    """The tokenizer itself prepends `bos` (Llama 3, Gemma), on top of a template that writes it too."""
    positions: int = 512
    tie_embeddings: bool = False
    hidden: int = 128
    intermediate: int = 256
    heads: int = 2
    kv_heads: int = 2
    head_dim: int | None = None
    vocab_size: int = 640
    config_extra: tuple[tuple[str, Any], ...] = ()
    """Further config keys of the family (tuples keep the recipe hashable)."""
    steps: int = 300
    version: str = ""
    """Changes whenever the recipe's output changes (a cached build of another version is rebuilt)."""


TINY_CHAT = ModelRecipe(
    name="tiny-chat", model_type="llama", chat_template=CHAT_TEMPLATE, eos="<|im_end|>", bos="<s>", pad="<pad>",
    special_tokens=tuple(SPECIAL_TOKENS), version=BUILD_VERSION,
)
"""The quickstart's base: a Llama with ChatML turns."""


def _train_tokenizer(texts: list[str], recipe: ModelRecipe) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=recipe.vocab_size,
        special_tokens=list(recipe.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if recipe.bos_in_tokenizer and recipe.bos:
        bos_id = tok.token_to_id(recipe.bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{recipe.bos} $A", pair=f"{recipe.bos} $A {recipe.bos} $B", special_tokens=[(recipe.bos, bos_id)]
        )
    named = {recipe.bos, recipe.eos, recipe.pad}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=recipe.bos,
        eos_token=recipe.eos,
        pad_token=recipe.pad,
        unk_token=None,
        additional_special_tokens=[t for t in recipe.special_tokens if t not in named],
    )
    fast.chat_template = recipe.chat_template
    fast.model_max_length = recipe.positions
    return fast


def is_built(directory: Path, recipe: ModelRecipe = TINY_CHAT) -> bool:
    """True when `directory` holds a model of this recipe's current version."""
    marker = directory / "tiny_model.json"
    if not marker.exists():
        return False
    built = json.loads(marker.read_text())
    return bool(built.get("version") == recipe.version and built.get("recipe", TINY_CHAT.name) == recipe.name)


def _model_config(recipe: ModelRecipe, tokenizer: Any) -> Any:
    from transformers import AutoConfig

    def token_id(token: str | None) -> int | None:
        return None if token is None else int(tokenizer.convert_tokens_to_ids(token))

    kwargs: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": recipe.hidden,
        "intermediate_size": recipe.intermediate,
        "num_hidden_layers": 2,
        "num_attention_heads": recipe.heads,
        "num_key_value_heads": recipe.kv_heads,
        "max_position_embeddings": recipe.positions,
        "tie_word_embeddings": recipe.tie_embeddings,
        "bos_token_id": token_id(recipe.bos),
        "eos_token_id": token_id(recipe.eos),
        "pad_token_id": token_id(recipe.pad),
        **dict(recipe.config_extra),
    }
    if recipe.head_dim is not None:
        kwargs["head_dim"] = recipe.head_dim
    return AutoConfig.for_model(recipe.model_type, **kwargs)


def build_model(recipe: ModelRecipe, directory: str | Path, steps: int | None = None, seed: int = 0, log: Any = None) -> Path:
    """Build (or reuse) the pre-trained tiny model of `recipe` in `directory`; deterministic for a seed.

    Safe to interrupt: files appear only when the build is complete.
    """
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    directory = Path(directory)
    if is_built(directory, recipe):
        return directory
    steps = recipe.steps if steps is None else steps
    torch.manual_seed(seed)
    chats = pretraining_chats(4000, seed=seed)
    # The tokenizer also sees the task's vocabulary so that keywords are few tokens; the model never
    # sees the task itself during pre-training.
    task_words = " ".join(w for ws in LABELS.values() for w in ws) + " " + " ".join(LABELS) + " " + SYSTEM_PROMPT
    tokenizer = _train_tokenizer([m["content"] for c in chats for m in c] + [task_words] * 20, recipe)
    # The rendered template already holds the family's BOS: a tokenizer that adds one must not add a second.
    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in chats]
    config = _model_config(recipe, tokenizer)
    model = AutoModelForCausalLM.from_config(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    rng = random.Random(seed)
    model.train()
    batch_size = 32
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for step in range(steps):
        batch = _pretraining_batch(tokenizer, rng.sample(texts, batch_size), pad_id)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        if log and (step % 50 == 0 or step == steps - 1):
            log(step, steps, float(loss))
    model.eval()
    stops = [tokenizer.eos_token_id, *(tokenizer.convert_tokens_to_ids(t) for t in recipe.stop_tokens)]
    model.generation_config.eos_token_id = stops[0] if len(stops) == 1 else stops
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.do_sample = False

    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    marker: dict[str, Any] = {"version": recipe.version, "steps": steps, "seed": seed}
    if recipe is not TINY_CHAT:
        marker["recipe"] = recipe.name
    (staging / "tiny_model.json").write_text(json.dumps(marker))
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    return directory


def _pretraining_batch(tokenizer: Any, texts: list[str], pad_id: int) -> Any:
    """Rendered chats as one padded batch, without the tokenizer's own BOS (the template wrote it)."""
    import torch

    ids = [tokenizer(t, add_special_tokens=False, truncation=True, max_length=96)["input_ids"] for t in texts]
    width = max(len(i) for i in ids)
    input_ids = torch.tensor([i + [pad_id] * (width - len(i)) for i in ids])
    attention = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])
    return {"input_ids": input_ids, "attention_mask": attention}


def build_tiny_model(directory: str | Path, steps: int = 300, seed: int = 0, log: Any = None) -> Path:
    """Build (or reuse) the quickstart's pre-trained tiny chat model; about a minute on 2 CPU cores."""
    return build_model(TINY_CHAT, directory, steps=steps, seed=seed, log=log)
