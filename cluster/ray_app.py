"""Run an app module's handlers on Ray: the entrypoint of the RayJob and VM examples.

    python cluster/ray_app.py examples.ivr --app ivr --placement relay_calls

The module (importable from the working directory) builds a ``RelayClient``
named ``client`` (``--client`` to change) and registers ``on_call`` /
``on_message`` on it, as ``examples/ivr.py`` does. This script builds the Ray
client with the same contexts and limit and those handlers, and serves until
SIGTERM. Credentials come from the environment (``SIGNALWIRE_PROJECT_ID``,
``SIGNALWIRE_API_TOKEN``, ``SIGNALWIRE_SPACE``) of this process only; the Ray
runtime keeps them in the GCS key-value store, never in actor arguments.

The actors' metrics go out through each Ray node's metrics export port.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from relay_actors import RelayClient
from relay_actors.ray_runtime import RayOptions


def build(argv: list[str] | None = None) -> RelayClient:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", help="module defining the app's client and handlers, e.g. examples.ivr")
    parser.add_argument("--client", default="client", help="name of the RelayClient in the module")
    parser.add_argument("--app", default="default")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--min-call-actors", type=int, default=2)
    parser.add_argument("--max-call-actors", type=int, default=8)
    parser.add_argument("--calls-per-actor", type=int, default=5000)
    parser.add_argument("--placement", default="spread", help='"spread" or a custom resource (relay_calls)')
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path.cwd()))
    module = importlib.import_module(args.module)
    source = getattr(module, args.client)
    settings = source._settings  # the module's contexts and limit
    placement = "spread" if args.placement == "spread" else {"resource": args.placement}
    client = RelayClient(
        contexts=list(settings.contexts),
        max_active_calls=settings.max_active_calls,
        runtime="ray",
        ray_options=RayOptions(
            app=args.app,
            connections=args.connections,
            min_call_actors=args.min_call_actors,
            max_call_actors=args.max_call_actors,
            calls_per_actor=args.calls_per_actor,
            placement=placement,
        ),
    )
    if source._on_call is not None:
        client.on_call(source._on_call)
    if source._on_message is not None:
        client.on_message(source._on_message)
    return client


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    build().run()
