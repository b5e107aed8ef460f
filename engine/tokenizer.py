"""Tokenizer and chat template: from tokenizer.json/tokenizer_config.json or from GGUF metadata."""

import json
import logging
import os

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

from engine.errors import EngineError

logger = logging.getLogger(__name__)

_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
_QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


class ChatTokenizer:
    """Encode/decode text and render conversations with the model's own chat template."""

    def __init__(
        self, tokenizer: Tokenizer, chat_template: str | None, bos_token: str, eos_token: str, add_bos: bool
    ) -> None:
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.add_bos = add_bos
        self.bos_token_id = tokenizer.token_to_id(bos_token) if bos_token else None
        self._template = None

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        if self.add_bos and self.bos_token_id is not None and ids[:1] != [self.bos_token_id]:
            ids = [self.bos_token_id] + ids
        return ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Render one conversation as the prompt text the model was trained on."""
        if not self.chat_template:
            raise EngineError("this model ships no chat template; use generate() with a plain prompt")
        if self._template is None:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            self._template = env.from_string(self.chat_template)
        return self._template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )


def from_hf_folder(path: str) -> ChatTokenizer:
    """tokenizer.json + tokenizer_config.json (chat_template, bos/eos, add_bos_token)."""
    tok_path = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(tok_path):
        raise EngineError(f"{path} has no tokenizer.json")
    tok = Tokenizer.from_file(tok_path)
    conf = {}
    conf_path = os.path.join(path, "tokenizer_config.json")
    if os.path.isfile(conf_path):
        with open(conf_path) as f:
            conf = json.load(f)
    template = conf.get("chat_template")
    jinja_path = os.path.join(path, "chat_template.jinja")
    if template is None and os.path.isfile(jinja_path):
        with open(jinja_path) as f:
            template = f.read()

    def _tok(v) -> str:
        return (v.get("content") if isinstance(v, dict) else v) or ""

    return ChatTokenizer(
        tok,
        template,
        _tok(conf.get("bos_token")),
        _tok(conf.get("eos_token")),
        bool(conf.get("add_bos_token", False)),
    )


def _pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    if pre in ("smollm", "starcoder", "refact"):
        return pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
    if pre in ("llama-bpe", "llama3", "qwen2"):
        pattern = _QWEN2_PATTERN if pre == "qwen2" else _LLAMA3_PATTERN
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    if pre in ("gpt2", "default", ""):
        return pre_tokenizers.ByteLevel(add_prefix_space=False)
    raise EngineError(
        f"GGUF pre-tokenizer {pre!r} is not supported; supported: smollm, llama-bpe, qwen2, gpt2"
    )


def from_gguf_reader(reader) -> ChatTokenizer:
    """Build a byte-level BPE `tokenizers` tokenizer from GGUF ``tokenizer.ggml.*`` metadata."""

    def get(key, default=None):
        f = reader.fields.get(key)
        return default if f is None else f.contents()

    kind = get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise EngineError(f"GGUF tokenizer model {kind!r} is not supported (byte-level BPE 'gpt2' only)")
    tokens = get("tokenizer.ggml.tokens")
    types = get("tokenizer.ggml.token_type") or [1] * len(tokens)
    merges = [tuple(m.split(" ", 1)) for m in get("tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = _pre_tokenizer(get("tokenizer.ggml.pre", "default"))
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t, ty in zip(tokens, types, strict=False)
            if ty in (3, 4)
        ]
    )
    bos_id, eos_id = get("tokenizer.ggml.bos_token_id"), get("tokenizer.ggml.eos_token_id")
    return ChatTokenizer(
        tok,
        get("tokenizer.chat_template"),
        tokens[bos_id] if bos_id is not None else "",
        tokens[eos_id] if eos_id is not None else "",
        bool(get("tokenizer.ggml.add_bos_token", False)),
    )
