"""Server settings: environment variables with the EMBEDSERVE_ prefix, overridden by CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from embedserve.batching.config import BatchingConfig
from embedserve.models.spec import Device, DType

MIN_API_KEY_CHARS = 8
MIN_JWT_SECRET_BYTES = 32  # HS256 wants a key at least as long as its 256-bit hash (RFC 7518 3.2)


_BATCHING = BatchingConfig()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMBEDSERVE_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0: every interface).")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on.")
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Model sources to serve, `SOURCE` or `ID=SOURCE`, comma-separated; empty: the bundled default.",
    )
    models_file: Path | None = Field(None, description="A YAML file with a top-level `models:` list.")
    device: Device = Field(
        "auto", description="Where models run unless their entry says: auto picks cuda, then mps, then cpu."
    )
    dtype: DType = Field(
        "auto",
        description="Weights' precision unless an entry says: auto is float16 on CUDA (bfloat16 for Gemma3), else float32.",
    )
    threads: int | None = Field(
        None,
        gt=0,
        # Its old name, torch_threads, still works (it always set ONNX Runtime's threads too).
        validation_alias=AliasChoices("threads", "EMBEDSERVE_THREADS", "torch_threads", "EMBEDSERVE_TORCH_THREADS"),
        description="Intra-op threads of each model's runtime (torch or ONNX Runtime); default: the CPUs this process "
        "may use, its cgroup's CPU quota rounded up (models/cpus.py).",
    )
    int8_any_cpu: bool = Field(
        False,
        description="Serve INT8 folders even where this CPU computes them below their accepted accuracy "
        "(8-bit weights without VNNI), with a warning, unless an entry says otherwise.",
    )

    # The batcher's own defaults (batching.config, their one home), settable server-wide.
    max_batch_tokens: int | None = Field(
        None,
        gt=0,
        description=f"Tokens per batch; default {_BATCHING.max_batch_tokens}; on CPU the runner's own "
        "(4096 torch, 1536 ONNX).",
    )
    max_batch_size: int = Field(_BATCHING.max_batch_size, gt=0, description="Texts (or pairs) per batch.")
    max_wait_ms: float = Field(
        _BATCHING.max_wait_ms,
        ge=0,
        description="How long an idle worker waits for a fuller batch; not when requests have lately come "
        "further apart than this (a lone client waits for nobody).",
    )
    arrival_window: int = Field(
        _BATCHING.arrival_window,
        ge=0,
        description="Batches' worth of the oldest waiting texts a batch is formed from (grouped by length within): "
        "a request of many texts finishes about in arrival order, not with the whole backlog; 0: the whole queue.",
    )
    bulk_share: float = Field(
        _BATCHING.bulk_share,
        ge=0,
        le=0.5,
        description="While queries and bulk work (X-Priority: bulk) both wait, bulk's share of the model's time; "
        "0: bulk runs only when no query waits; at most 0.5 (never two bulk batches in a row).",
    )
    max_queue_tokens: int = Field(
        _BATCHING.max_queue_tokens, gt=0, description="Tokens waiting per model before new requests get 429."
    )
    max_queue_items: int = Field(
        _BATCHING.max_queue_items, gt=0, description="Texts waiting per model before new requests get 429."
    )
    batch_workers: int | None = Field(
        None,
        gt=0,
        description="Batches run at once per model; on CPU they split torch's intra-op threads. "
        "Default: 2 for torch on CPU, else 1.",
    )

    max_inputs: int = Field(2048, gt=0, description="Inputs per embedding request.")
    max_documents: int = Field(1000, gt=0, description="Documents per rerank request.")
    max_token_vectors: int = Field(
        8192,
        gt=0,
        description="Per-token rows one request may ask for (/embed_all, /v1/multi-vector): its input tokens, "
        "together. 8192 rows of bge-m3's 1024 dimensions are 32 MiB of float32.",
    )
    max_body_bytes: int = Field(16 * 2**20, gt=0, description="Request body size; larger bodies get 413.")
    body_read_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a client may take to send the whole request body; slower ones get 408. A file upload "
        "gets 1 s more for each 64 KiB it has sent (server.http.middleware.UPLOAD_MIN_BYTES_PER_SECOND).",
    )
    header_read_timeout: float = Field(
        10.0, gt=0, description="Seconds a client may take to send a request's headers; slower ones get 408."
    )
    max_connections: int | None = Field(
        None,
        gt=0,
        description="Open connections; past it new ones get 503 and are closed. Default: the open-files limit "
        "less 128 (for models, logs and upstream calls), at most 16384.",
    )
    tokenize_inline_chars: int = Field(
        2048, ge=0, description="Requests with fewer characters are tokenized on the event loop (cheaper than a hop)."
    )

    max_tokens_per_request: int = Field(
        524_288, ge=0, description="Input tokens per request, after tokenization (413 beyond; 0: no limit)."
    )
    request_timeout: float = Field(30.0, gt=0, description="Seconds a request may take before a 504.")
    max_request_timeout: float = Field(
        300.0, gt=0, description="The most a client may ask for with the X-Request-Timeout header."
    )

    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=f"API keys (at least {MIN_API_KEY_CHARS} characters each), comma-separated; any key or JWT "
        "secret turns auth on.",
    )
    api_keys_file: Path | None = Field(None, description="A YAML file of keys (or their SHA-256) with per-key limits.")
    jwt_secret: str | None = Field(
        None, description=f"HS256 secret of JWTs (Supabase's JWT secret), at least {MIN_JWT_SECRET_BYTES} bytes."
    )
    jwt_audience: str = Field("authenticated", description="Required `aud` of JWTs; empty: not checked.")
    auth_public_paths: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["/health", "/health/*"],
        description="Paths (glob patterns) served without credentials, comma-separated.",
    )
    protect_metrics: bool = Field(False, description="Require credentials for /metrics too.")
    admin_key: SecretStr | None = Field(
        None, description="Key of the admin API (/v1/backends: upstream endpoints at run time); unset: the API is off."
    )

    rate_limit_rps: float = Field(0, ge=0, description="Requests per second per caller (0: off).")
    rate_limit_burst: int = Field(0, ge=0, description="Requests a caller may burst; default: the rate.")
    rate_limit_tokens_per_minute: int = Field(0, ge=0, description="Input tokens per minute per caller (0: off).")
    global_rate_limit_rps: float = Field(0, ge=0, description="Requests per second for all callers (0: off).")
    global_rate_limit_burst: int = Field(0, ge=0)
    redis_url: str | None = Field(
        None, description="Share rate limits and the response cache between replicas through this Redis."
    )

    cache_bytes: int | None = Field(
        None,
        ge=0,
        description="Bytes of model outputs this replica keeps to answer repeated texts without computing; "
        "0: no cache. Default: 1/32 of the machine's memory, at most 256 MiB (~150k MiniLM vectors).",
    )
    cache_ttl_seconds: float = Field(
        86400.0, gt=0, description="How long the shared (Redis) tier of the response cache keeps an item."
    )

    data_dir: Path | None = Field(
        None,
        description="Where the Batch API keeps its files and jobs (a SQLite database and JSONL files); created at "
        "the first upload. Default: $XDG_DATA_HOME/embedserve, else ~/.local/share/embedserve.",
    )
    max_file_bytes: int = Field(
        200 * 2**20, gt=0, description="Size of an uploaded file (POST /v1/files); larger uploads get 413."
    )
    max_batch_lines: int = Field(
        50_000,
        gt=0,
        description="Requests (lines) in one batch job's input file, as OpenAI's limit; past it the job fails.",
    )
    batch_concurrency: int = Field(
        16,
        gt=0,
        description="Lines of a batch job in flight at once (at bulk priority), so the batcher can form full batches.",
    )

    shutdown_grace_seconds: float = Field(
        30.0, ge=0, description="On SIGTERM, how long in-flight requests may take to finish before exit."
    )

    malloc_mmap_threshold: int = Field(
        4 * 2**20,
        ge=0,
        le=2**30,
        description="glibc malloc, in servers with torch models: blocks this large or larger get their own "
        "mappings, returned when freed, so memory does not creep up with each new batch shape; 0: glibc's own "
        "(growing) threshold. ONNX Runtime keeps its own arena and gains nothing from it.",
    )

    model_memory_bytes: int | None = Field(
        None,
        gt=0,
        description="Memory the models served here may take together, by their weight files' sizes: a load that "
        "would pass it first unloads the least recently used idle models; a model that cannot fit gets 503. "
        "Default: no budget.",
    )

    keep_serving_failed_models: bool = Field(
        False,
        description="When a model fails to load, serve the others (it answers 503) instead of exiting with status 3.",
    )

    log_level: str = Field("info", description="debug, info, warning or error.")
    log_json: bool = Field(True, description="One JSON object per log line.")
    access_log: bool = Field(True, description="One log line per request.")
    access_log_probes: bool = Field(False, description="Access-log health probes (/health*) too.")

    @field_validator("models", "api_keys", "auth_public_paths", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _keys_long_enough(cls, keys: list[str]) -> list[str]:
        for number, key in enumerate(keys, start=1):
            if len(key) < MIN_API_KEY_CHARS:  # the message names the entry, never the key
                raise ValueError(f"key {number} of {len(keys)} is shorter than {MIN_API_KEY_CHARS} characters")
        return keys

    @field_validator("jwt_secret")
    @classmethod
    def _secret_long_enough(cls, secret: str | None) -> str | None:
        if secret is not None and len(secret.encode()) < MIN_JWT_SECRET_BYTES:
            raise ValueError(
                f"an HS256 secret needs at least {MIN_JWT_SECRET_BYTES} bytes; this one has {len(secret.encode())}"
            )
        return secret

    def batching(self) -> BatchingConfig:
        chosen = {"max_batch_tokens": self.max_batch_tokens, "workers": self.batch_workers}
        return BatchingConfig(
            **{name: value for name, value in chosen.items() if value is not None},
            max_batch_size=self.max_batch_size,
            max_wait_ms=self.max_wait_ms,
            arrival_window=self.arrival_window,
            bulk_share=self.bulk_share,
            max_queue_tokens=self.max_queue_tokens,
            max_queue_items=self.max_queue_items,
        )

    def cache_size(self) -> int:
        """cache_bytes, or what this machine can spare for it: 1/32 of its memory, at most 256 MiB."""
        if self.cache_bytes is not None:
            return self.cache_bytes
        import os

        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return min(256 * 2**20, memory // 32)

    def connection_limit(self) -> int:
        """max_connections, or what the process's open-files limit leaves room for."""
        if self.max_connections is not None:
            return self.max_connections
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return 16384
        return max(16, min(16384, soft - 128))

    def batch_data_dir(self) -> Path:
        """data_dir, or the XDG data home's embedserve folder."""
        if self.data_dir is not None:
            return self.data_dir
        import os

        home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(home) / "embedserve"

    def public_paths(self) -> list[str]:
        return self.auth_public_paths if self.protect_metrics else [*self.auth_public_paths, "/metrics"]
