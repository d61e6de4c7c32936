"""What the Riva ASR and TTS backends share: the connection, deadlines, errors and reconnects.

Riva speaks gRPC; `nvidia-riva-client` (`riva.client`) builds the channel (`Auth`: TLS on/off,
an optional root certificate, metadata sent with every call) and wraps the stubs
(`ASRService`, `SpeechSynthesisService`). Its service methods take no deadline, so the channel
is wrapped in a client interceptor that gives every call one (`timeout_s`; a streaming
recognition, which lasts as long as the user speaks, gets its own). The API key is read from an
environment variable whose *name* is an option, so a Kubernetes Secret can provide it without
the key ever appearing in a config file; it is sent as `authorization: Bearer <key>`, the header
NVIDIA's hosted endpoints (and Riva behind an authenticating proxy) check.

gRPC failures become `BackendError`s that name the endpoint and what to check. UNAVAILABLE
(server down, restarting, connection refused) rebuilds the channel, which also resets gRPC's
reconnect backoff, and retries a call that has not produced anything yet, `retries` times with
exponential backoff; a call that already streamed output is never retried.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field

from services.core.backend import BackendError, BackendOptions
from services.stages.sdk import import_sdk

T = TypeVar("T")

INSTALL_HINT = "the riva backends need nvidia-riva-client: pip install 'avatar-serve[riva]'"


class RivaConnectionOptions(BackendOptions):
    """How to reach a Riva server; shared by the riva ASR and TTS options."""

    uri: str = Field(
        "localhost:50051",
        min_length=3,
        max_length=500,
        description="Riva gRPC endpoint host:port, e.g. riva.speech.svc:50051.",
    )
    use_ssl: bool = Field(False, description="Connect with TLS (implied by ssl_cert).")
    ssl_cert: str | None = Field(
        None, max_length=1000, description="PEM root certificate to verify the server with."
    )
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        max_length=200,
        description="Name of the environment variable holding the API key (sent as "
        "'authorization: Bearer <key>'); None = no key.",
    )
    function_id: str | None = Field(
        None,
        max_length=200,
        description="NVIDIA Cloud Function id (hosted Riva on grpc.nvcf.nvidia.com:443), "
        "sent as 'function-id' metadata; None for a self-hosted server.",
    )
    timeout_s: float = Field(
        10.0, gt=0.0, le=600.0, description="Deadline of one call (a streaming call: see the ASR)."
    )
    retries: int = Field(
        2, ge=0, le=10, description="Retries of a call that got UNAVAILABLE before any output."
    )
    retry_backoff_s: float = Field(
        0.2, ge=0.0, le=10.0, description="Wait before the first retry; doubles on each one."
    )


def grpc_module() -> Any:
    """`grpc`, imported where it is used (it comes with nvidia-riva-client)."""
    return import_sdk("grpc", INSTALL_HINT)


def _deadline_interceptor(grpc: Any, unary_s: float, stream_s: float) -> Any:
    """An interceptor that gives each call without a deadline one: `stream_s` for calls that
    stream requests (recognition of live audio; synthesis, whose texts are all sent at once),
    `unary_s` for all others."""

    class _Details(
        collections.namedtuple(
            "_Details",
            ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
        ),
        grpc.ClientCallDetails,
    ):
        pass

    def with_deadline(details: Any, seconds: float) -> Any:
        if details.timeout is not None:
            return details
        return _Details(
            details.method,
            seconds,
            details.metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    class _Deadline(
        grpc.UnaryUnaryClientInterceptor,
        grpc.UnaryStreamClientInterceptor,
        grpc.StreamUnaryClientInterceptor,
        grpc.StreamStreamClientInterceptor,
    ):
        def intercept_unary_unary(self, continuation, details, request):
            return continuation(with_deadline(details, unary_s), request)

        def intercept_unary_stream(self, continuation, details, request):
            return continuation(with_deadline(details, unary_s), request)

        def intercept_stream_unary(self, continuation, details, requests):
            return continuation(with_deadline(details, stream_s), requests)

        def intercept_stream_stream(self, continuation, details, requests):
            return continuation(with_deadline(details, stream_s), requests)

    return _Deadline()


class RivaConnection:
    """One Riva endpoint: builds `riva.client.Auth`, maps errors, reconnects and retries.

    Args:
        options: The backend's connection options.
        label: Names the service in errors, e.g. "riva asr".
        stream_deadline_s: Deadline of calls that stream requests; default `timeout_s`.
    """

    def __init__(
        self, options: RivaConnectionOptions, label: str, stream_deadline_s: float | None = None
    ) -> None:
        self.options = options
        self.label = label
        self.stream_deadline_s = stream_deadline_s or options.timeout_s
        self._lock = threading.Lock()
        self._auth: Any = None
        self._raw_channel: Any = None
        # Channels replaced by a reconnect still carry other threads' calls; each is closed once
        # the longest deadline has passed since it was replaced, and all of them on close().
        self._retired: list[tuple[float, Any]] = []

    @property
    def where(self) -> str:
        return f"{self.label} at {self.options.uri}"

    def metadata(self) -> list[list[str]]:
        """The metadata sent with every call (the API key, the cloud function id)."""
        opts = self.options
        pairs: list[list[str]] = []
        if opts.api_key_env:
            key = os.environ.get(opts.api_key_env, "").strip()
            if not key:
                raise BackendError(
                    f"{self.where}: the environment variable {opts.api_key_env} (api_key_env) "
                    "that should hold the API key is not set or empty"
                )
            pairs.append(["authorization", f"Bearer {key}"])
        if opts.function_id:
            pairs.append(["function-id", opts.function_id])
        return pairs

    def open(self) -> None:
        """Build the channel (gRPC connects lazily, on the first call); idempotent."""
        with self._lock:
            if self._auth is None:
                self._auth, self._raw_channel = self._build()

    def _build(self) -> tuple[Any, Any]:
        riva_client = import_sdk("riva.client", INSTALL_HINT)
        grpc = grpc_module()
        opts = self.options
        if opts.ssl_cert is not None and not Path(opts.ssl_cert).expanduser().is_file():
            raise BackendError(f"{self.where}: ssl_cert file not found: {opts.ssl_cert}")
        try:
            auth = riva_client.Auth(
                ssl_root_cert=opts.ssl_cert,
                use_ssl=opts.use_ssl,
                uri=opts.uri,
                metadata_args=self.metadata() or None,
            )
        except (OSError, ValueError) as exc:
            raise BackendError(f"{self.where}: cannot build the gRPC channel: {exc}") from exc
        raw = auth.channel
        # The SDK's services read `auth.channel`: give them the one whose calls have deadlines.
        auth.channel = grpc.intercept_channel(
            raw, _deadline_interceptor(grpc, opts.timeout_s, self.stream_deadline_s)
        )
        return auth, raw

    def auth(self) -> Any:
        """The current `riva.client.Auth` (built on first use)."""
        self.open()
        return self._auth

    def reconnect(self, seen: Any) -> None:
        """Replace the channel after UNAVAILABLE, unless another thread already did since
        `seen` (the `Auth` whose call failed) was current."""
        with self._lock:
            if self._auth is not seen:
                return
            now = time.monotonic()
            longest = max(self.options.timeout_s, self.stream_deadline_s)
            keep = []
            for since, channel in self._retired:
                if now - since > longest:
                    channel.close()
                else:
                    keep.append((since, channel))
            keep.append((now, self._raw_channel))
            self._retired = keep
            self._auth, self._raw_channel = self._build()

    def close(self) -> None:
        with self._lock:
            for _, channel in self._retired:
                channel.close()
            self._retired = []
            if self._raw_channel is not None:
                self._raw_channel.close()
            self._auth = self._raw_channel = None

    def _backoff(self, attempt: int) -> None:
        delay = self.options.retry_backoff_s * (2**attempt)
        if delay > 0:
            time.sleep(delay)

    def call(self, fn: Callable[[Any], T]) -> T:
        """Run `fn(auth)` (one unary call), retrying it on UNAVAILABLE.

        Raises:
            BackendError: the call failed (see `error`).
        """
        grpc = grpc_module()
        attempt = 0
        while True:
            auth = self.auth()
            try:
                return fn(auth)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt >= self.options.retries:
                    raise self.error(exc, attempts=attempt + 1) from exc
            self.reconnect(auth)
            self._backoff(attempt)
            attempt += 1

    def stream(
        self, fn: Callable[[Any], Iterable[T]], *, streaming_requests: bool = False
    ) -> Iterator[T]:
        """Yield from `fn(auth)` (one streaming call); retried on UNAVAILABLE only while it has
        yielded nothing, so no output is ever repeated.

        `fn` is called once per attempt; a caller streaming requests makes its request iterator
        replayable (`Replay`), since a failed attempt may have consumed some of it.
        """
        grpc = grpc_module()
        attempt = 0
        while True:
            auth = self.auth()
            started = False
            try:
                for item in fn(auth):
                    started = True
                    yield item
                return
            except grpc.RpcError as exc:
                retry = not started and exc.code() == grpc.StatusCode.UNAVAILABLE
                if not retry or attempt >= self.options.retries:
                    raise self.error(
                        exc, attempts=attempt + 1, streaming_requests=streaming_requests
                    ) from exc
            self.reconnect(auth)
            self._backoff(attempt)
            attempt += 1

    def error(
        self, exc: Any, *, attempts: int = 1, streaming_requests: bool = False
    ) -> BackendError:
        """A `BackendError` for a failed call that says where, what and what to check."""
        grpc = grpc_module()
        code = exc.code() if hasattr(exc, "code") else None
        details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
        codes = grpc.StatusCode
        if code == codes.UNAVAILABLE:
            tries = f" after {attempts} attempts" if attempts > 1 else ""
            return BackendError(
                f"{self.where} is unavailable{tries} ({details}); check that the Riva server "
                "is running and that uri/use_ssl are right"
            )
        if code == codes.DEADLINE_EXCEEDED:
            deadline = self.stream_deadline_s if streaming_requests else self.options.timeout_s
            return BackendError(
                f"{self.where} did not answer within the {deadline:g} s deadline "
                f"(timeout_s={self.options.timeout_s:g})"
            )
        if code == codes.INVALID_ARGUMENT:
            return BackendError(f"{self.where} rejected the request as invalid: {details}")
        if code in (codes.UNAUTHENTICATED, codes.PERMISSION_DENIED):
            key = (
                f"the API key in ${self.options.api_key_env} (api_key_env)"
                if self.options.api_key_env
                else "an API key (none is configured: set api_key_env)"
            )
            return BackendError(
                f"{self.where} refused the credentials ({code.name}: {details}); check {key}"
            )
        name = code.name if code is not None else type(exc).__name__
        return BackendError(f"{self.where} failed: {name}: {details}")


class Replay:
    """A request iterator that can be replayed from its start for a retried streaming call.

    gRPC pulls requests on its own thread, so a call that fails with UNAVAILABLE may already
    have taken some; `attempt()` yields what was taken before, then continues with the source.
    Once the call has answered, `settle()` stops recording (no retry can follow).
    """

    def __init__(self, source: Iterable[T]) -> None:
        self._source = iter(source)
        self._taken: list[Any] = []
        self._recording = True
        self._lock = threading.Lock()

    def settle(self) -> None:
        with self._lock:
            self._recording = False
            self._taken = []

    def attempt(self) -> Iterator[Any]:
        with self._lock:
            replay = list(self._taken)
        yield from replay
        for item in self._source:
            with self._lock:
                if self._recording:
                    self._taken.append(item)
            yield item
