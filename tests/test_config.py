"""Unit tests of deribit_kit.config: defaults, environment, URLs, repr without secrets."""

from __future__ import annotations

import dataclasses

import pytest

from deribit_kit.config import URLS, Settings, http_url_for


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in ("DERIBIT_TARGET", "DERIBIT_CLIENT_ID", "DERIBIT_CLIENT_SECRET"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_defaults(clean_env: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert s.target == "sim" and s.is_sim and s.testnet
    assert s.client_id is None and s.client_secret is None and not s.has_credentials
    assert s.auth_method == "client_credentials"
    assert s.request_timeout == 10.0 and s.connect_timeout == 10.0
    assert s.heartbeat is None
    assert s.reconnect and s.client_rate_limit and not s.cancel_on_disconnect
    assert (s.backoff_initial, s.backoff_max) == (0.2, 10.0)
    assert s.rate_limit_retries == 6
    assert s.ws_ping_interval == 20.0
    assert s.sim_options == {}
    assert Settings().sim_options is not s.sim_options  # not a shared mutable default


def test_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DERIBIT_TARGET", "test")
    clean_env.setenv("DERIBIT_CLIENT_ID", "my-id")
    clean_env.setenv("DERIBIT_CLIENT_SECRET", "my-secret")
    s = Settings()
    assert s.target == "test" and not s.is_sim and s.testnet
    assert s.client_id == "my-id" and s.client_secret == "my-secret" and s.has_credentials
    assert s.urls() == URLS["test"]


def test_environment_read_at_construction(clean_env: pytest.MonkeyPatch) -> None:
    before = Settings()
    clean_env.setenv("DERIBIT_TARGET", "prod")
    assert before.target == "sim"
    assert Settings().target == "prod"
    assert Settings(target="sim").target == "sim"  # an explicit argument wins over the environment


def test_has_credentials_needs_both(clean_env: pytest.MonkeyPatch) -> None:
    assert not Settings(client_id="a").has_credentials
    assert not Settings(client_secret="b").has_credentials
    assert not Settings(client_id="", client_secret="b").has_credentials
    assert Settings(client_id="a", client_secret="b").has_credentials


def test_urls(clean_env: pytest.MonkeyPatch) -> None:
    assert Settings(target="test").urls() == ("wss://test.deribit.com/ws/api/v2", "https://test.deribit.com")
    assert Settings(target="prod").urls() == ("wss://www.deribit.com/ws/api/v2", "https://www.deribit.com")
    url = "ws://127.0.0.1:8765/ws/api/v2"
    assert Settings(target=url).urls() == (url, "http://127.0.0.1:8765")
    assert Settings(target="wss://example.org/ws/api/v2").urls() == ("wss://example.org/ws/api/v2",
                                                                      "https://example.org")


@pytest.mark.parametrize("target", ["sim", "staging", "http://127.0.0.1:8765", "", "TEST"])
def test_urls_unknown_target(clean_env: pytest.MonkeyPatch, target: str) -> None:
    with pytest.raises(ValueError, match="unknown target"):
        Settings(target=target).urls()


@pytest.mark.parametrize(("ws", "http"), [
    ("wss://test.deribit.com/ws/api/v2", "https://test.deribit.com"),
    ("ws://127.0.0.1:8765/ws/api/v2", "http://127.0.0.1:8765"),
    ("ws://h:1/prefix/ws/api/v2", "http://h:1/prefix"),
    ("ws://h:1/ws/api/v2?x=1", "http://h:1"),
    ("ws://h:1/other", "http://h:1/other"),
    ("wss://h", "https://h"),
    ("https://already", "https://already"),
])
def test_http_url_for(ws: str, http: str) -> None:
    assert http_url_for(ws) == http


def test_secrets_absent_from_repr(clean_env: pytest.MonkeyPatch) -> None:
    s = Settings(target="test", client_id="ID-123", client_secret="SECRET-456", sim_options={"seed": "S-789"})
    text = repr(s) + str(s)
    assert "SECRET-456" not in text
    assert "ID-123" not in text
    assert "S-789" not in text
    assert "target='test'" in text


def test_with_(clean_env: pytest.MonkeyPatch) -> None:
    s = Settings(client_id="a", client_secret="b")
    t = s.with_(target="prod", request_timeout=2.5)
    assert (t.target, t.request_timeout, t.client_id, t.client_secret) == ("prod", 2.5, "a", "b")
    assert (s.target, s.request_timeout) == ("sim", 10.0)  # the original is unchanged
    assert not t.testnet and not t.is_sim
    with pytest.raises(TypeError):
        s.with_(no_such_field=1)


def test_frozen(clean_env: pytest.MonkeyPatch) -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.target = "prod"  # type: ignore[misc]


@pytest.mark.parametrize(("target", "is_sim", "testnet"), [
    ("sim", True, True),
    ("test", False, True),
    ("prod", False, False),
    ("ws://127.0.0.1:8765/ws/api/v2", False, True),
])
def test_is_sim_and_testnet(clean_env: pytest.MonkeyPatch, target: str, is_sim: bool, testnet: bool) -> None:
    s = Settings(target=target)
    assert (s.is_sim, s.testnet) == (is_sim, testnet)


def test_testnet_false_for_the_production_url(clean_env: pytest.MonkeyPatch) -> None:
    assert not Settings(target=URLS["prod"][0]).testnet
