"""The broker's pure decisions: where a request may go, the headers it leaves with, the
OAuth refresh decision and the audit line."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from coi.broker import rules
from tests.strategies import broker_hosts, header_lists, request_targets

ANTHROPIC = rules.parse_upstream("https://api.anthropic.com")
FAKE = rules.parse_upstream("https://127.0.0.1:8443/api")
OPENAI = rules.parse_upstream("https://api.openai.com:8443/api")
UPSTREAMS = [ANTHROPIC, OPENAI]


def test_a_request_to_the_broker_itself_goes_to_the_first_upstream() -> None:
    got = rules.route("POST", "/v1/messages", "127.0.0.1:41399", UPSTREAMS)
    assert got == rules.Route(ANTHROPIC, "/v1/messages")
    assert rules.route("GET", "/x", "localhost", [FAKE]) == rules.Route(FAKE, "/api/x")


def test_a_named_upstream_is_reached_and_any_other_host_is_refused() -> None:
    got = rules.route("GET", "/x", "api.openai.com:8443", UPSTREAMS)
    assert got == rules.Route(OPENAI, "/api/x")
    absolute = rules.route("GET", "https://api.anthropic.com/v1?a=1", "", UPSTREAMS)
    assert absolute == rules.Route(ANTHROPIC, "/v1?a=1")
    refused = rules.route("GET", "/x", "evil.example", UPSTREAMS)
    assert isinstance(refused, rules.Refusal) and refused.status == 403
    assert refused.named == "evil.example"
    other_port = rules.route("GET", "http://api.anthropic.com:8443/", "", UPSTREAMS)
    assert isinstance(other_port, rules.Refusal) and other_port.status == 403


def test_connect_is_never_tunnelled() -> None:
    got = rules.route("CONNECT", "api.anthropic.com:443", "api.anthropic.com:443", UPSTREAMS)
    assert isinstance(got, rules.Refusal) and got.status == 403


@given(st.sampled_from(["GET", "POST", "CONNECT"]), request_targets, broker_hosts)
def test_a_forwarded_request_only_ever_reaches_an_allowed_upstream(
    method: str, target: str, host: str
) -> None:
    got = rules.route(method, target, host, UPSTREAMS)
    if isinstance(got, rules.Route):
        assert got.upstream in UPSTREAMS and got.path.startswith(got.upstream.prefix + "/")
        assert "evil.example" not in (target.split("/")[2] if "://" in target else host)
    else:
        assert got.status in (400, 403)


@given(header_lists, st.sampled_from(["x-api-key", "authorization"]), st.booleans())
def test_only_the_real_credential_leaves_and_only_once(
    headers: list[tuple[str, str]], key_header: str, oauth: bool
) -> None:
    cred = rules.Credential("oauth" if oauth else "key", "REAL")
    out = rules.rewrite(headers, ANTHROPIC, cred, key_header, [("anthropic-beta", "oauth-1")])
    names = [k.lower() for k, _ in out]
    credential = [v for k, v in out if k.lower() in ("authorization", "x-api-key")]
    assert len(credential) == 1 and credential[0].endswith("REAL")
    assert "cookie" not in names and not any(n.startswith("proxy-") for n in names)
    assert names.count("host") == 1 and ("Host", "api.anthropic.com") in out
    assert out[-1] == ("Connection", "close") and names.count("connection") == 1
    if oauth:
        assert credential[0] == "Bearer REAL"
        beta = [v for k, v in out if k.lower() == "anthropic-beta"]
        assert any("oauth-1" in v for v in beta)


def test_an_api_key_goes_in_the_tools_header() -> None:
    placeholder = [("x-api-key", "sk-placeholder"), ("Authorization", "Bearer sk-placeholder")]
    out = rules.rewrite(placeholder, ANTHROPIC, rules.Credential("key", "K"), "x-api-key")
    assert ("x-api-key", "K") in out and not any("placeholder" in v for _, v in out)
    out = rules.rewrite(placeholder, ANTHROPIC, rules.Credential("key", "K"), "authorization")
    assert ("Authorization", "Bearer K") in out


def test_the_oauth_flag_joins_a_list_the_request_already_had() -> None:
    headers = [("anthropic-beta", "a, b")]
    out = rules.merge_list_header(headers, "anthropic-beta", "oauth-1")
    assert out == [("anthropic-beta", "a, b, oauth-1")]
    assert rules.merge_list_header(out, "Anthropic-Beta", "a") == out


@given(st.floats(1e9, 4e9), st.floats(-1e6, 1e6), st.booleans())
def test_refresh_is_due_exactly_when_the_token_expires_within_the_margin(
    now: float, left: float, millis: bool
) -> None:
    """Claude Code writes epoch milliseconds; seconds are taken too (any date after 1973)."""
    expiry = (now + left) * 1000 if millis else now + left
    data = {"o": {"e": expiry}}
    due = rules.needs_refresh(data, ["o", "e"], now, 300)
    if abs(left - 300) > 0.01:  # float rounding at the edge
        assert due == (left < 300)


def test_an_unknown_expiry_is_never_refreshed() -> None:
    assert not rules.needs_refresh({}, ["o", "e"], 100.0, 300)
    assert not rules.needs_refresh({"o": {"e": "soon"}}, ["o", "e"], 100.0, 300)
    assert not rules.needs_refresh({"o": {"e": True}}, ["o", "e"], 100.0, 300)


def test_a_refresh_keeps_every_other_key_and_rotates_the_refresh_token() -> None:
    data = {"c": {"accessToken": "a", "refreshToken": "r", "expiresAt": 1, "scopes": ["x"]}}
    answer = {"access_token": "a2", "refresh_token": "r2", "expires_in": 60}
    fresh = rules.refreshed(
        data, answer, ["c", "accessToken"], ["c", "refreshToken"], ["c", "expiresAt"], 1000.0
    )
    assert fresh == {
        "c": {"accessToken": "a2", "refreshToken": "r2", "expiresAt": 1060000, "scopes": ["x"]}
    }
    assert data["c"]["accessToken"] == "a"  # the input is not changed


def test_the_audit_line_has_no_query_header_or_body() -> None:
    line = rules.audit_record(1.23456, "api", "POST", "/v1/m?key=secret", 200, 10)
    assert line == {
        "time": 1.235,
        "upstream": "api",
        "method": "POST",
        "path": "/v1/m",
        "status": 200,
        "bytes": 10,
    }


def test_the_git_helper_answers_only_for_a_listed_https_host() -> None:
    ask = "protocol=https\nhost=GitHub.com\npath=o/r.git\n"
    answer = rules.git_answer(ask, ["github.com"], "ghp_T")
    assert answer is not None and "password=ghp_T" in answer and "host=github.com" in answer
    assert rules.git_answer(ask, ["gitlab.com"], "ghp_T") is None
    assert rules.git_answer("protocol=http\nhost=github.com\n", ["github.com"], "T") is None
    assert rules.git_answer(ask, ["github.com"], "") is None
    assert rules.git_answer("host=github.com\n", ["github.com"], "T") is None
