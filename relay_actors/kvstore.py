"""Small durable state in Ray's GCS key-value store: it outlives any actor process.

Used for what a restarted connection actor needs and cannot ask anyone else
for: the credentials (kept out of actor arguments, which Ray's dashboard and
state API show) and the session's resume state. Values are JSON (orjson).
Ray offers async access only on its GCS client object, so that is used when
present; otherwise the blocking call runs in a thread (Ray forces that one).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

__all__ = ["delete", "get", "get_sync", "put", "put_sync"]

NAMESPACE = b"relay_actors"
_TIMEOUT = 10.0


def _key(key: str) -> bytes:
    return key.encode()


def _client() -> Any:
    from ray.experimental import internal_kv

    return internal_kv.internal_kv_get_gcs_client()


async def put(key: str, value: Any) -> None:
    data = orjson.dumps(value)
    client = _client()
    if hasattr(client, "async_internal_kv_put"):
        await client.async_internal_kv_put(_key(key), data, True, NAMESPACE, timeout=_TIMEOUT)
    else:  # pragma: no cover - older Ray
        await asyncio.to_thread(put_sync, key, value)


async def get(key: str) -> Any:
    client = _client()
    if hasattr(client, "async_internal_kv_get"):
        data = await client.async_internal_kv_get(_key(key), NAMESPACE, timeout=_TIMEOUT)
    else:  # pragma: no cover - older Ray
        return await asyncio.to_thread(get_sync, key)
    return orjson.loads(data) if data else None


async def delete(key: str) -> None:
    client = _client()
    if hasattr(client, "async_internal_kv_del"):
        await client.async_internal_kv_del(_key(key), False, NAMESPACE, timeout=_TIMEOUT)
    else:  # pragma: no cover - older Ray
        from ray.experimental import internal_kv

        await asyncio.to_thread(internal_kv._internal_kv_del, _key(key), namespace=NAMESPACE)


def put_sync(key: str, value: Any) -> None:
    """For the driver (not inside actors)."""
    from ray.experimental import internal_kv

    internal_kv._internal_kv_put(_key(key), orjson.dumps(value), True, namespace=NAMESPACE)


def get_sync(key: str) -> Any:
    from ray.experimental import internal_kv

    data = internal_kv._internal_kv_get(_key(key), namespace=NAMESPACE)
    return orjson.loads(data) if data else None


def delete_sync(key: str) -> None:
    from ray.experimental import internal_kv

    internal_kv._internal_kv_del(_key(key), namespace=NAMESPACE)
