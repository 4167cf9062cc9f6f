"""Small durable state in Ray's GCS key-value store: it outlives any actor process.

Layout (values are JSON, orjson):

* ``relay_actors`` namespace (fixed): one **app record** per running app, key
  ``app/<name>``: its lifecycle state, the driver that started it, a config
  fingerprint (an HMAC, no secret in clear), its contexts and pool bounds, and
  the name of its secrets namespace. ``relay-actors status`` lists these.
* ``relay_actors/<random>`` namespace, one per deploy: the app's **secrets** —
  ``credentials``, ``link_secret`` (authenticates the direct actor links) and
  ``shard/<n>/resume`` (the session's resume state, sealed with Fernet under a
  key derived from the credentials, never stored; see :class:`AppSecrets`).

Stopping an app deletes the whole secrets namespace and the record; a start
that finds a record whose actors are gone reclaims it the same way.

What this protects, honestly: Ray's KV store has no access control — any
driver or job that can connect to the cluster can read every namespace, and
anyone who can run code there can run code in our actors anyway. The random
namespace scopes the secrets to one deploy (one delete by prefix reclaims them
all, a name reused by the next deploy never meets the last one's leftovers, and
a scan of the fixed namespace, or a guess at the old fixed keys, finds no
secret); sealing makes the resume state tamper-evident and unreadable without
the credentials (a stray copy of the resume record alone reveals no
``authorization_state``, and one from another deploy is refused). Neither
keeps a job on the same cluster from reading the credentials: run relay-actors
on a cluster you trust, with Ray's token auth on (``RAY_AUTH_MODE=token``), and
no untrusted jobs.

Async access goes through Ray's GCS client object (the driver's helpers
``*_sync`` through ``ray.experimental.internal_kv``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from typing import Any

import orjson

from ..errors import RelayError

__all__ = [
    "NAMESPACE",
    "AppSecrets",
    "apps",
    "create_record",
    "delete",
    "delete_app",
    "get",
    "get_sync",
    "keys",
    "keys_sync",
    "put",
    "put_sync",
    "read_record",
    "record_key",
    "secrets_namespace",
    "update_record",
]

log = logging.getLogger("relay_actors.ray_runtime.kvstore")

#: The fixed namespace: app records only, never secrets.
NAMESPACE = b"relay_actors"
_TIMEOUT = 10.0
_RECORD = "app/"


def _client() -> Any:
    from ray.experimental import internal_kv

    return internal_kv.internal_kv_get_gcs_client()


async def put(key: str, value: Any, *, namespace: bytes = NAMESPACE, overwrite: bool = True) -> bool:
    """Store ``value``; returns False if ``overwrite`` is off and the key existed."""
    data = orjson.dumps(value)
    added = await _client().async_internal_kv_put(key.encode(), data, overwrite, namespace, timeout=_TIMEOUT)
    return bool(added) or overwrite


async def get(key: str, *, namespace: bytes = NAMESPACE) -> Any:
    data = await _client().async_internal_kv_get(key.encode(), namespace, timeout=_TIMEOUT)
    return orjson.loads(data) if data else None


async def delete(key: str, *, namespace: bytes = NAMESPACE, by_prefix: bool = False) -> None:
    await _client().async_internal_kv_del(key.encode(), by_prefix, namespace, timeout=_TIMEOUT)


async def keys(prefix: str, *, namespace: bytes = NAMESPACE) -> list[str]:
    found = await _client().async_internal_kv_keys(prefix.encode(), namespace, timeout=_TIMEOUT)
    return sorted(k.decode() for k in found)


def put_sync(key: str, value: Any, *, namespace: bytes = NAMESPACE) -> None:
    """For the driver (not inside actors)."""
    from ray.experimental import internal_kv

    internal_kv._internal_kv_put(key.encode(), orjson.dumps(value), True, namespace=namespace)


def get_sync(key: str, *, namespace: bytes = NAMESPACE) -> Any:
    from ray.experimental import internal_kv

    data = internal_kv._internal_kv_get(key.encode(), namespace=namespace)
    return orjson.loads(data) if data else None


def keys_sync(prefix: str, *, namespace: bytes = NAMESPACE) -> list[str]:
    from ray.experimental import internal_kv

    return sorted(k.decode() for k in internal_kv._internal_kv_list(prefix.encode(), namespace=namespace))


# --- app records -----------------------------------------------------------------------


def record_key(app: str) -> str:
    return f"{_RECORD}{app}"


def secrets_namespace(record: dict[str, Any]) -> bytes:
    """The secrets namespace an app record points to."""
    return NAMESPACE + b"/" + str(record["secrets"]).encode()


async def read_record(app: str) -> dict[str, Any] | None:
    record: dict[str, Any] | None = await get(record_key(app))
    return record


async def create_record(app: str, record: dict[str, Any]) -> bool:
    """Claim the app's name: False if another driver holds a record for it."""
    return await put(record_key(app), record, overwrite=False)


async def update_record(app: str, record: dict[str, Any]) -> None:
    await put(record_key(app), record)


async def apps() -> list[str]:
    """Names of the apps with a record (running, starting, or left by a crash)."""
    return [key[len(_RECORD) :] for key in await keys(_RECORD)]


async def delete_app(app: str, record: dict[str, Any] | None) -> None:
    """Delete an app's secrets namespace (every key in it) and its record."""
    if record and record.get("secrets"):
        await delete("", namespace=secrets_namespace(record), by_prefix=True)
    await delete(record_key(app))


# --- the secrets, as the actors read them --------------------------------------------------


class AppSecrets:
    """One deploy's secrets namespace (see the module docstring).

    The resume state is sealed with Fernet (``cryptography``) under a key derived
    by HMAC-SHA256 from the credentials and this namespace's name: the key is in
    no store, a resume state cannot be opened by another deploy, and a tampered
    one is refused (the shard then starts a fresh session).
    """

    def __init__(self, app: str, namespace: bytes) -> None:
        self.app = app
        self.namespace = namespace
        self._fernet: Any = None

    @classmethod
    async def open(cls, app: str) -> AppSecrets:
        """The current deploy's secrets of ``app`` (raises if the app has no record)."""
        record = await read_record(app)
        if not record or not record.get("secrets"):
            raise RelayError("config", f"app {app!r} has no record in Ray's KV store: it was stopped")
        return cls(app, secrets_namespace(record))

    async def credentials(self) -> dict[str, str]:
        creds: dict[str, str] | None = await get("credentials", namespace=self.namespace)
        if not creds:
            raise RelayError("config", f"no credentials stored for app {self.app!r}")
        return creds

    async def link_secret(self) -> str:
        return str(await get("link_secret", namespace=self.namespace) or "")

    async def load(self, key: str) -> Any:
        """A value of the deploy's own state (kept with its secrets, deleted with them)."""
        return await get(key, namespace=self.namespace)

    async def save(self, key: str, value: Any) -> None:
        await put(key, value, namespace=self.namespace)

    async def claim(self, key: str, value: Any) -> bool:
        """Store ``value`` under ``key`` only if nothing is there: True if this call did
        (of two that race, exactly one wins; see :mod:`~relay_actors.ray_runtime.shard_standby`)."""
        return await put(key, value, namespace=self.namespace, overwrite=False)

    async def keys(self, prefix: str) -> list[str]:
        return await keys(prefix, namespace=self.namespace)

    async def link_tls(self) -> dict[str, str] | None:
        """The deploy's link certificate and key (:mod:`relay_actors.ray_runtime.link_tls`)."""
        identity: dict[str, str] | None = await get("link_tls", namespace=self.namespace)
        return identity

    async def store(self, credentials: dict[str, str], link_secret: str, link_tls: dict[str, str]) -> None:
        """The driver's part: write the deploy's secrets (the TLS identity before the link
        secret: an actor that finds the secret expects the identity too)."""
        await put("credentials", credentials, namespace=self.namespace)
        await put("link_tls", link_tls, namespace=self.namespace)
        await put("link_secret", link_secret, namespace=self.namespace)

    async def _sealer(self) -> Any:
        if self._fernet is None:
            from cryptography.fernet import Fernet

            creds = await self.credentials()
            secret = (creds.get("token") or creds.get("jwt_token") or "").encode()
            info = b"relay-actors resume v1\0" + creds.get("project", "").encode() + b"\0" + self.namespace
            key = hmac.new(secret, info, hashlib.sha256).digest()
            self._fernet = Fernet(base64.urlsafe_b64encode(key))
        return self._fernet

    async def save_resume(self, shard: int, state: dict[str, Any]) -> None:
        sealed = (await self._sealer()).encrypt(orjson.dumps(state)).decode()
        await put(f"shard/{shard}/resume", sealed, namespace=self.namespace)

    async def load_resume(self, shard: int) -> dict[str, Any]:
        """The shard's resume state, or ``{}`` (none, or it does not open: start fresh)."""
        from cryptography.fernet import InvalidToken

        sealed = await get(f"shard/{shard}/resume", namespace=self.namespace)
        if not sealed:
            return {}
        try:
            state: dict[str, Any] = orjson.loads((await self._sealer()).decrypt(str(sealed).encode()))
        except (InvalidToken, ValueError):
            log.warning(
                "app %r shard %d: stored resume state does not open; starting a fresh session",
                self.app,
                shard,
            )
            return {}
        return state

    async def has_resume(self, shard: int) -> bool:
        return bool(await get(f"shard/{shard}/resume", namespace=self.namespace))
