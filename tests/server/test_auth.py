"""Only allowed callers get in: API keys (Bearer or X-API-Key, from settings or a keys file) and
Supabase-style HS256 JWTs; health probes stay open; refusals are 401s in the route's error shape."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
import yaml

from tests.inprocess import AppServer, start_app

SECRET = "a-supabase-jwt-secret-of-at-least-32-bytes"
PLAIN_KEY = "plain-key-0001"
FILE_KEY = "file-key-0001"
HASHED_KEY = "hashed-key-0001"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    folder = tmp_path_factory.mktemp("auth")
    keys_file = folder / "keys.yaml"
    keys_file.write_text(
        yaml.safe_dump(
            {
                "keys": [
                    {"key": FILE_KEY, "name": "team-a"},
                    {"sha256": hashlib.sha256(HASHED_KEY.encode()).hexdigest(), "name": "team-b"},
                ]
            }
        )
    )
    env = {
        "EMBEDSERVE_API_KEYS": PLAIN_KEY,
        "EMBEDSERVE_API_KEYS_FILE": str(keys_file),
        "EMBEDSERVE_JWT_SECRET": SECRET,
        "EMBEDSERVE_ACCESS_LOG": "true",
    }
    running = start_app(folder, env=env)
    yield running
    running.stop()


class Token:
    """A JWT minted when the test runs (not when the module is collected), so it is never stale: claims are
    given as is, or relative to now with the `_in` suffix (`exp_in=-60`: expired a minute ago)."""

    def __init__(self, **claims: object) -> None:
        self.claims = claims

    def __str__(self) -> str:
        now = int(time.time())
        body: dict[str, object] = {"sub": "user-42", "aud": "authenticated", "role": "authenticated", "iat": now}
        body["exp"] = now + 600
        for name, value in self.claims.items():
            if name.endswith("_in"):
                body[name.removesuffix("_in")] = now + int(value)  # type: ignore[call-overload]
            else:
                body[name] = value
        return jwt.encode({k: v for k, v in body.items() if v is not None}, SECRET, algorithm="HS256")


class Bearer:
    def __init__(self, token: Token, scheme: str = "Bearer") -> None:
        self.token, self.scheme = token, scheme

    def __str__(self) -> str:
        return f"{self.scheme} {self.token}"


def headers_now(headers: dict[str, object]) -> dict[str, str]:
    """The parametrized headers with their tokens minted now."""
    return {name: str(value) for name, value in headers.items()}


def embed(server: AppServer, headers: dict[str, str], route: str = "/v1/embeddings") -> httpx.Response:
    body = {"input": "who may ask?"} if route == "/v1/embeddings" else {"text": "who may ask?"}
    return server.http.post(f"{server.url}{route}", json=body, headers=headers, timeout=30)


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {PLAIN_KEY}"},
        {"X-API-Key": PLAIN_KEY},
        {"Authorization": f"Bearer {FILE_KEY}"},
        {"X-API-Key": HASHED_KEY},
        {"Authorization": Bearer(Token())},
        {"Authorization": Bearer(Token(aud=["authenticated", "other"]), scheme="bearer")},
    ],
    ids=["bearer-key", "x-api-key", "keys-file", "hashed-key", "jwt", "jwt-audience-list"],
)
def test_allowed_callers_are_served(guarded: AppServer, headers: dict[str, object]) -> None:
    assert embed(guarded, headers_now(headers)).status_code == 200


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({}, "missing credentials"),
        ({"Authorization": "Bearer wrong-key-000"}, "invalid"),
        ({"X-API-Key": "wrong-key-000"}, "invalid"),
        ({"Authorization": f"Basic {PLAIN_KEY}"}, "Bearer"),
        ({"Authorization": Bearer(Token(exp_in=-60))}, "expired"),
        ({"Authorization": Bearer(Token(nbf_in=600))}, "not valid yet"),
        ({"Authorization": Bearer(Token(aud="anon"))}, "audience"),
        ({"Authorization": Bearer(Token(exp=None))}, "exp"),
        ({"Authorization": Bearer(Token(sub=None))}, "sub"),
        (
            {
                "Authorization": "Bearer "
                + jwt.encode({"sub": "x", "aud": "authenticated", "exp": 2**40}, "other-secret-of-32-bytes-or-more!!")
            },
            "invalid token",
        ),
    ],
    ids=[
        "none",
        "wrong-bearer",
        "wrong-x-api-key",
        "basic",
        "expired",
        "not-yet",
        "audience",
        "no-exp",
        "no-sub",
        "bad-signature",
    ],
)
def test_everyone_else_gets_a_401_in_the_routes_shape(
    guarded: AppServer, headers: dict[str, object], words: str
) -> None:
    sent = headers_now(headers)
    openai = embed(guarded, sent)
    assert openai.status_code == 401
    assert words in openai.json()["error"]["message"]
    assert openai.json()["error"]["type"] == "authentication_error"
    assert openai.headers["www-authenticate"].startswith('Bearer realm="embedserve"')
    native = embed(guarded, sent, "/embed")
    assert native.status_code == 401 and native.json()["error_type"] == "Unauthorized"


def test_the_challenge_is_a_well_formed_quoted_string(guarded: AppServer) -> None:
    # The reason quotes the claim ("exp"): inside the quoted-string its quotes are escaped (RFC 9110 5.6.4).
    answer = embed(guarded, headers_now({"Authorization": Bearer(Token(exp=None))}))
    challenge = answer.headers["www-authenticate"]
    match = re.fullmatch(
        r'Bearer realm="embedserve", error="invalid_token", error_description="((?:[^"\\]|\\.)*)"', challenge
    )
    assert match is not None, challenge
    assert re.sub(r"\\(.)", r"\1", match.group(1)) == answer.json()["error"]["message"]
    assert '"exp"' in answer.json()["error"]["message"]


def test_probes_and_metrics_are_open_and_docs_are_not(guarded: AppServer) -> None:
    for path in ("/health", "/health/live", "/health/ready", "/metrics"):
        assert guarded.http.get(f"{guarded.url}{path}").status_code == 200, path
    assert guarded.http.get(f"{guarded.url}/docs").status_code == 401
    assert guarded.http.get(f"{guarded.url}/openapi.json", headers={"X-API-Key": PLAIN_KEY}).status_code == 200
    assert 'embed_rejections_total{model="",reason="auth"}' in guarded.http.get(f"{guarded.url}/metrics").text


def test_keys_never_reach_the_log(guarded: AppServer) -> None:
    embed(guarded, {"X-API-Key": PLAIN_KEY})
    embed(guarded, {"X-API-Key": "wrong-key-000"})
    log = guarded.log()
    assert "request" in log
    for secret in (PLAIN_KEY, FILE_KEY, HASHED_KEY, "wrong-key-000"):
        assert secret not in log


def test_auth_is_off_by_default(server: AppServer) -> None:
    assert embed(server, {}).status_code == 200
