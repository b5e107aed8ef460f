"""Plain dataclasses describing a model architecture and the engine's settings."""

from dataclasses import dataclass, field


@dataclass
class ModelConfig:
    """A Llama-family architecture (Llama 2/3, SmolLM2, Qwen2, Mistral)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    eos_token_ids: list[int] = field(default_factory=list)
    bos_token_id: int | None = None


@dataclass
class EngineConfig:
    """Scheduler and KV-cache settings of one engine instance."""

    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    max_model_len: int = 2048
    block_size: int = 16
    num_blocks: int = 0
    enable_prefix_caching: bool = True
    num_scheduler_steps: int = 1
    kv_policy: str = "full"  # "full" or "h2o" (engine/h2o.py)
    kv_budget: int = 0  # h2o: tokens kept per (layer, KV head) of a generating sequence
    recent_window: int = 0  # h2o: newest tokens never evicted
