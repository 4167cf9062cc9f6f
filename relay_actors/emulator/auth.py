"""Credentials the emulator accepts: project/token pairs, HS256 JWTs, authorization states.

The JWT is a real compact JWS (header.payload.signature, base64url, HMAC-SHA256)
signed with a per-emulator secret, so a forged or tampered token is refused.
The authorization state pushed after connect is ``base64(payload):base64(mac)``
binding it to the session's protocol; invalid ones are ignored, as the service does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Any

import orjson

__all__ = ["Credentials"]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Credentials:
    """The accepted project/token pairs and the signing secret of JWTs and authorization states."""

    def __init__(self, project: str, token: str) -> None:
        self.project = project
        self.token = token
        self.tokens: dict[str, set[str]] = {project: {token}}
        self._secret = secrets.token_bytes(32)

    def add(self, project: str, token: str) -> None:
        """Accept one more project/token pair."""
        self.tokens.setdefault(project, set()).add(token)

    def check_token(self, project: Any, token: Any) -> bool:
        """True when ``project``/``token`` is an accepted pair."""
        if not isinstance(project, str) or not isinstance(token, str) or not token:
            return False
        accepted = self.tokens.get(project)
        return accepted is not None and any(hmac.compare_digest(token, t) for t in accepted)

    def _sign(self, data: bytes) -> bytes:
        return hmac.new(self._secret, data, hashlib.sha256).digest()

    def make_jwt(self, project: str | None = None, ttl: float = 3600.0) -> str:
        """A signed HS256 JWT for ``project`` (default: the main project)."""
        header = _b64url(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
        now = int(time.time())
        claims = {"project_id": project or self.project, "iat": now, "exp": now + int(ttl)}
        payload = _b64url(orjson.dumps(claims))
        signing_input = f"{header}.{payload}".encode()
        return f"{header}.{payload}.{_b64url(self._sign(signing_input))}"

    def verify_jwt(self, token: Any) -> str | None:
        """The project of a valid, unexpired JWT signed by this emulator, else None."""
        if not isinstance(token, str) or token.count(".") != 2:
            return None
        header, payload, signature = token.split(".")
        try:
            expected = self._sign(f"{header}.{payload}".encode())
            if not hmac.compare_digest(_b64url_decode(signature), expected):
                return None
            if orjson.loads(_b64url_decode(header)).get("alg") != "HS256":
                return None
            claims = orjson.loads(_b64url_decode(payload))
        except (ValueError, orjson.JSONDecodeError, AttributeError):
            return None
        if not isinstance(claims, dict) or claims.get("exp", 0) < time.time():
            return None
        project = claims.get("project_id")
        return project if isinstance(project, str) and project in self.tokens else None

    def make_authorization_state(self, protocol: str) -> str:
        """An opaque ``base64:base64`` blob naming ``protocol``, signed."""
        body = orjson.dumps({"protocol": protocol, "iat": time.time()})
        return f"{base64.b64encode(body).decode()}:{base64.b64encode(self._sign(body)).decode()}"

    def check_authorization_state(self, blob: Any) -> str | None:
        """The protocol named by a valid authorization state, else None."""
        if not isinstance(blob, str) or blob.count(":") != 1:
            return None
        body_b64, mac_b64 = blob.split(":")
        try:
            body = base64.b64decode(body_b64, validate=True)
            mac = base64.b64decode(mac_b64, validate=True)
            if not hmac.compare_digest(mac, self._sign(body)):
                return None
            protocol = orjson.loads(body).get("protocol")
        except (ValueError, orjson.JSONDecodeError, AttributeError):
            return None
        return protocol if isinstance(protocol, str) else None
