"""The local LLM backend (SmolLM2 on llama.cpp) and the fake."""

from __future__ import annotations

import pytest

from services.core.backend import BackendError
from services.core.config import TurnSettings
from services.core.registry import create_backend
from services.core.types import ChatMessage
from services.turn.orchestrator import llm_sentences

MESSAGES = (
    ChatMessage("system", "You are a friendly AI avatar. Answer in one to three short sentences."),
    ChatMessage("user", "What do you like to do on weekends?"),
)


@pytest.fixture(scope="module")
def llama():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    backend = create_backend("llm", "llama_cpp")
    backend.load()
    yield backend
    backend.close()


@pytest.mark.slow
def test_llama_streams_a_non_empty_reply_under_the_token_bound(llama):
    pieces = list(llama.stream(MESSAGES, max_tokens=16))
    assert 1 <= len(pieces) <= 16
    assert "".join(pieces).strip()


@pytest.mark.slow
def test_llama_reply_is_released_sentence_by_sentence(llama):
    turn = TurnSettings(max_tokens=120, max_sentences=2)
    chunks = list(llm_sentences(llama, MESSAGES, turn))
    assert 1 <= len(chunks) <= 2
    assert all(c.text for c in chunks)
    assert chunks[0].first_token_s is not None and chunks[0].first_token_s > 0


@pytest.mark.slow
def test_llama_history_changes_the_answer(llama):
    with_history = (
        MESSAGES[0],
        ChatMessage("user", "My name is Zanzibar."),
        ChatMessage("assistant", "Nice to meet you, Zanzibar."),
        ChatMessage("user", "What is my name?"),
    )
    reply = "".join(llama.stream(with_history, max_tokens=30))
    assert "zanzibar" in reply.lower()


def test_missing_model_file_is_a_clear_error(tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    backend = create_backend("llm", "llama_cpp", {"model_path": str(tmp_path / "none.gguf")})
    with pytest.raises(BackendError, match="not found"):
        backend.load()


def test_fake_llm_bounds_and_failures():
    fake = create_backend("llm", "fake", {"reply": "one two three four"})
    assert "".join(fake.stream(MESSAGES, max_tokens=2)) == "one two"
    failing = create_backend("llm", "fake", {"failure_rate": 1.0})
    with pytest.raises(BackendError):
        list(failing.stream(MESSAGES, max_tokens=5))
    with pytest.raises(BackendError, match="no messages"):
        list(fake.stream((), max_tokens=5))


@pytest.mark.slow
def test_transformers_backend_streams_on_cpu_from_the_shipped_gguf():
    pytest.importorskip("transformers", reason="the gpu extra is not installed")
    pytest.importorskip("gguf", reason="the gpu extra is not installed")
    llm = create_backend("llm", "transformers", {"device": "cpu"})
    pieces = list(llm.stream(MESSAGES, max_tokens=12))
    assert 1 <= len(pieces) <= 12 and "".join(pieces).strip()
    llm.close()


def test_transformers_backend_reports_a_missing_model(tmp_path):
    pytest.importorskip("transformers", reason="the gpu extra is not installed")
    llm = create_backend("llm", "transformers", {"model": str(tmp_path / "none.gguf")})
    with pytest.raises(BackendError, match="not found"):
        llm.load()
