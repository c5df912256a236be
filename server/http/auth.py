"""Who is calling: API keys (Bearer or X-API-Key) and Supabase-style HS256 JWTs.

Keys are kept only as SHA-256 digests and compared in constant time; a caller is known to logs
and rate limits by the key's name or a digest prefix, never by the key itself.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from embedserve.server.config.errors import file_error
from embedserve.server.config.settings import MIN_API_KEY_CHARS


class CallerLimits(BaseModel):
    """Rate limits for one key; unset fields take the server-wide per-caller limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_second: float | None = Field(None, gt=0)
    burst: int | None = Field(None, gt=0)
    tokens_per_minute: int | None = Field(None, gt=0)


class KeyEntry(BaseModel):
    """One API key of a keys file: the key itself, or its SHA-256 hex digest (better: no secret at rest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str | None = Field(None, min_length=MIN_API_KEY_CHARS)
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    name: str | None = None
    limits: CallerLimits = CallerLimits()

    @model_validator(mode="after")
    def _one_of_key_or_digest(self) -> KeyEntry:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError("a key entry needs exactly one of `key` or `sha256`")
        return self

    def digest(self) -> bytes:
        return bytes.fromhex(self.sha256) if self.sha256 else _digest(self.key or "")


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[KeyEntry] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Caller:
    identity: str
    """`key:NAME`, `jwt:SUB` or `ip:ADDRESS`: what logs and rate limits know the caller by."""
    limits: CallerLimits | None = None


class AuthError(Exception):
    """Missing or wrong credentials: a 401 with `WWW-Authenticate`."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True, slots=True)
class _Key:
    digest: bytes
    identity: str
    limits: CallerLimits


class Authenticator:
    def __init__(
        self,
        keys: list[str] | None = None,
        keys_file: Path | None = None,
        *,
        jwt_secret: str | None = None,
        jwt_audience: str | None = "authenticated",
    ) -> None:
        entries = [KeyEntry(key=k) for k in keys or []]
        if keys_file is not None:
            data = yaml.safe_load(Path(keys_file).read_text())
            try:
                entries += KeysFile.model_validate(data).keys
            except ValidationError as exc:  # named by entry and field: the message never holds a key
                raise file_error(keys_file, exc, data, "keys") from None
        self._keys = [_Key(e.digest(), f"key:{e.name or e.digest().hex()[:12]}", e.limits) for e in entries]
        self._jwt_secret = jwt_secret
        self._jwt_audience = jwt_audience

    @property
    def enabled(self) -> bool:
        return bool(self._keys) or self._jwt_secret is not None

    def authenticate(self, authorization: str | None, api_key: str | None) -> Caller:
        """The caller these headers prove; AuthError when they prove none."""
        token = None
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise AuthError("the Authorization header must be 'Bearer <api key or token>'")
            token = value.strip()
        elif api_key:
            token = api_key.strip()
        if not token:
            raise AuthError("missing credentials: send 'Authorization: Bearer <api key or token>' or 'X-API-Key'")
        key = self._match_key(token)
        if key is not None:
            return Caller(key.identity, key.limits)
        if self._jwt_secret is not None and token.count(".") == 2 and not api_key:
            return self._from_jwt(token)
        raise AuthError("invalid API key" if self._keys else "invalid token")

    def caller(self, identity: str) -> Caller:
        """The caller an identity names, with its key's limits where a key of the keys file has that identity (a
        Batch API job runs its lines as the caller who made it, after the request that did is gone)."""
        key = next((key for key in self._keys if key.identity == identity), None)
        return Caller(identity, key.limits if key is not None else None)

    def _match_key(self, token: str) -> _Key | None:
        presented = _digest(token)
        found = None
        for key in self._keys:  # every key is compared, so timing does not tell which one matched
            if hmac.compare_digest(presented, key.digest):
                found = key
        return found

    def _from_jwt(self, token: str) -> Caller:
        import jwt

        try:
            claims = jwt.decode(
                token,
                self._jwt_secret,
                algorithms=["HS256"],
                audience=self._jwt_audience,
                options={"require": ["exp", "sub"], "verify_aud": self._jwt_audience is not None},
                leeway=5,
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthError("the token is not valid yet") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError(f"the token's audience is not {self._jwt_audience!r}") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        return Caller(f"jwt:{claims['sub']}")
