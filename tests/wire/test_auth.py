"""Unit tests of Deribit's authentication text (deribit_kit.wire.auth): the published test vector,
public/auth signature params, the deri-hmac-sha256 header, verify, redact and ReplayGuard."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deribit_kit.wire.auth import (
    SIGNATURE_WINDOW_MS,
    HmacHeader,
    ReplayGuard,
    http_request_data,
    http_signature_header,
    parse_http_signature_header,
    redact,
    sign,
    signature_params,
    verify,
)

# https://docs.deribit.com/#authentication (client_signature example)
SECRET = "AMANDASECRECT"
TS = 1576074319000
NONCE = "1iqt2wls"
VECTOR = "56590594f97921b09b18f166befe0d1319b198bbcdad7ca73382de2f88fe9aa1"


class FakeClock:
    """A settable clock in seconds."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_deribit_published_vector() -> None:
    assert sign(SECRET, TS, NONCE, "") == VECTOR
    assert sign(SECRET, TS, NONCE) == VECTOR


def test_sign_is_hmac_of_the_documented_text() -> None:
    want = hmac.new(b"k", b"1\nn\nsome data", hashlib.sha256).hexdigest()
    assert sign("k", 1, "n", "some data") == want
    assert sign("k", 1, "n", "other") != want
    assert sign("k2", 1, "n", "some data") != want


def test_signature_params_with_fixed_inputs() -> None:
    p = signature_params("cid", SECRET, timestamp=TS, nonce=NONCE)
    assert p == {"grant_type": "client_signature", "client_id": "cid", "timestamp": TS, "nonce": NONCE,
                 "data": "", "signature": VECTOR}


def test_signature_params_defaults_are_fresh_and_valid() -> None:
    import time

    before = int(time.time() * 1000)
    a = signature_params("cid", "s", data="d")
    b = signature_params("cid", "s", data="d")
    assert before <= int(a["timestamp"]) <= int(time.time() * 1000)
    assert a["nonce"] != b["nonce"] and len(str(a["nonce"])) == 16
    assert verify("s", str(a["signature"]), int(a["timestamp"]), str(a["nonce"]), "d")


def test_http_request_data() -> None:
    assert http_request_data("get", "/api/v2/public/test?x=1") == "GET\n/api/v2/public/test?x=1\n\n"
    assert http_request_data("GET", "/u", b"").count("\n") == 3  # empty body still has three newlines
    assert http_request_data("post", "/u", b'{"a":1}') == 'POST\n/u\n{"a":1}\n'
    assert http_request_data("POST", "/u", '{"a":1}') == 'POST\n/u\n{"a":1}\n'


def test_http_signature_header_round_trip() -> None:
    value = http_signature_header("cid", "sec", "post", "/api/v2/private/buy", b"{}", timestamp=123, nonce="abc")
    assert value.startswith("deri-hmac-sha256 ")
    hdr = parse_http_signature_header(value)
    assert hdr == HmacHeader("cid", 123, sign("sec", 123, "abc", "POST\n/api/v2/private/buy\n{}\n"), "abc")
    assert verify("sec", hdr.signature, hdr.timestamp, hdr.nonce, http_request_data("POST", "/api/v2/private/buy",
                                                                                         b"{}"))


def test_http_signature_header_default_nonce_and_ts() -> None:
    a = parse_http_signature_header(http_signature_header("cid", "sec", "GET", "/"))
    b = parse_http_signature_header(http_signature_header("cid", "sec", "GET", "/"))
    assert a is not None and b is not None
    assert a.nonce != b.nonce
    assert a.timestamp > 1_600_000_000_000


@pytest.mark.parametrize("value", [
    "deri-hmac-sha256 id=cid,ts=5,sig=ab,nonce=n",
    "deri-hmac-sha256 nonce=n,sig=ab,ts=5,id=cid",
    "  DERI-HMAC-SHA256   sig=ab , id = cid ,  nonce=n,ts= 5  ",
    "Deri-Hmac-Sha256 ts=5,nonce=n,id=cid,sig=ab,extra=ignored",
])
def test_parse_header_any_order_and_spacing(value: str) -> None:
    assert parse_http_signature_header(value) == HmacHeader("cid", 5, "ab", "n")


def test_parse_header_without_nonce() -> None:
    assert parse_http_signature_header("deri-hmac-sha256 id=c,ts=1,sig=s") == HmacHeader("c", 1, "s", "")


@given(order=st.permutations(["id=cid", "ts=77", "sig=deadbeef", "nonce=xyz"]),
       pad=st.sampled_from(["", " ", "  "]))
def test_parse_header_permutations(order: list[str], pad: str) -> None:
    value = "deri-hmac-sha256 " + ",".join(pad + p + pad for p in order)
    assert parse_http_signature_header(value) == HmacHeader("cid", 77, "deadbeef", "xyz")


@pytest.mark.parametrize("value", [
    "",
    "garbage",
    "Bearer abc",
    "deri-hmac-sha256",
    "deri-hmac-sha256 ",
    "deri-hmac-sha256 id=cid,sig=ab,nonce=n",  # no ts
    "deri-hmac-sha256 ts=1,sig=ab",  # no id
    "deri-hmac-sha256 id=cid,ts=1",  # no sig
    "deri-hmac-sha256 id=cid,ts=soon,sig=ab",  # ts not an integer
    "deri-hmac-sha256 id cid ts 1 sig ab",
    "hmac-sha256 id=cid,ts=1,sig=ab,nonce=n",
])
def test_parse_header_garbage_is_none(value: str) -> None:
    assert parse_http_signature_header(value) is None


def test_verify() -> None:
    assert verify(SECRET, VECTOR, TS, NONCE)
    assert verify(SECRET, VECTOR.upper(), TS, NONCE)  # hex case does not matter
    assert not verify(SECRET, VECTOR, TS + 1, NONCE)
    assert not verify(SECRET, VECTOR, TS, NONCE, "data")
    assert not verify("other", VECTOR, TS, NONCE)
    assert not verify(SECRET, VECTOR[:-1], TS, NONCE)
    assert not verify(SECRET, "", TS, NONCE)


@pytest.mark.xfail(strict=True, raises=TypeError,
                   reason="bug: verify() raises TypeError (hmac.compare_digest) on a non-ASCII signature")
def test_verify_non_ascii_signature_is_false() -> None:
    assert not verify(SECRET, "é" * 64, TS, NONCE)


def test_redact() -> None:
    params: dict[str, object] = {"grant_type": "client_credentials", "client_id": "cid", "client_secret": "s",
                                 "signature": "sig", "access_token": "a", "refresh_token": "r", "nonce": "n"}
    out = redact(params)
    assert out == {"grant_type": "client_credentials", "client_id": "cid", "client_secret": "***",
                   "signature": "***", "access_token": "***", "refresh_token": "***", "nonce": "n"}
    assert params["client_secret"] == "s"  # a copy: the caller's dict is untouched
    assert redact({"a": 1}) == {"a": 1}


# ---------------------------------------------------------------- ReplayGuard


def test_replay_guard_window() -> None:
    clock = FakeClock(1000.0)
    g = ReplayGuard(clock=clock)
    now_ms = 1_000_000
    assert g.check("c", now_ms, "n1", "s") is None
    assert g.check("c", now_ms - SIGNATURE_WINDOW_MS, "n2", "s") is None  # exactly at the edge: accepted
    assert g.check("c", now_ms + SIGNATURE_WINDOW_MS, "n3", "s") is None
    assert g.check("c", now_ms - SIGNATURE_WINDOW_MS - 1, "n4", "s") == "timestamp out of window"
    assert g.check("c", now_ms + SIGNATURE_WINDOW_MS + 1, "n5", "s") == "timestamp out of window"
    clock.t += 61  # the clock moves on: a once-fresh timestamp goes stale
    assert g.check("c", now_ms, "n6", "s") == "timestamp out of window"


def test_replay_guard_custom_window() -> None:
    g = ReplayGuard(window_ms=10, clock=FakeClock(1.0))
    assert g.check("c", 1010, "n", "s") is None
    assert g.check("c", 1011, "n", "s") == "timestamp out of window"


def test_replay_guard_refuses_exact_replay_only() -> None:
    g = ReplayGuard(clock=FakeClock(1000.0))
    assert g.check("c", 1_000_000, "n", "abcd") is None
    assert g.check("c", 1_000_000, "n", "abcd") == "signature already used (replay)"
    assert g.check("c", 1_000_000, "n", "ABCD") == "signature already used (replay)"  # same hex, other case
    # same timestamp and nonce, different text signed: a different request, accepted
    assert g.check("c", 1_000_000, "n", "ef01") is None
    assert g.check("other", 1_000_000, "n", "abcd") is None  # another client
    assert g.check("c", 1_000_000, "n2", "abcd") is None
    assert g.check("c", 1_000_001, "n", "abcd") is None


def test_replay_guard_out_of_window_is_not_remembered() -> None:
    g = ReplayGuard(clock=FakeClock(1000.0))
    assert g.check("c", 1, "n", "s") == "timestamp out of window"
    assert len(g._seen) == 0


def test_replay_guard_bounded_memory() -> None:
    clock = FakeClock(1000.0)
    g = ReplayGuard(clock=clock, max_entries=5)
    for i in range(50):
        assert g.check("c", 1_000_000, f"n{i}", "s") is None
        assert len(g._seen) <= 5
    # the newest are still refused as replays; the oldest were forgotten to stay bounded
    assert g.check("c", 1_000_000, "n49", "s") is not None
    assert g.check("c", 1_000_000, "n0", "s") is None


def test_replay_guard_prunes_entries_beyond_the_horizon_first() -> None:
    clock = FakeClock(1000.0)
    g = ReplayGuard(clock=clock, max_entries=3)
    assert g.check("c", 1_000_000, "old", "s") is None
    clock.t += 100  # past twice the window: "old" may go
    ts = int(clock.t * 1000)
    assert g.check("c", ts, "a", "s") is None
    assert g.check("c", ts, "b", "s") is None
    assert g.check("c", ts, "c", "s") is None  # full: "old" is pruned, a and b kept
    assert len(g._seen) == 3
    for nonce in ("a", "b", "c"):
        assert g.check("c", ts, nonce, "s") == "signature already used (replay)"
