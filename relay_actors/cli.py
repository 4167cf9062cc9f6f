"""The ``relay-actors`` command: ``emulator``, ``load``, ``demo``, ``run``, ``status`` and ``stop``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: relay-actors COMMAND [ARGS...]

commands:
  emulator   run the RELAY emulator (prints one JSON line when ready)
  load       drive an emulator's control API with inbound calls
  demo       run the demo IVR on a local Ray against the embedded emulator
  run        serve a module's RelayClient in-process or on Ray (run MODULE:CLIENT [--ray])
  status     show the Ray apps, or one app's shards, calls and CallActors
  stop       drain and stop a Ray app

run 'relay-actors COMMAND --help' for a command's options."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "emulator":
        from .emulator.__main__ import main as emulator_main

        return emulator_main(rest)
    if command == "load":
        from .emulator.load import main as load_main

        return load_main(rest)
    if command == "demo":
        from .demo import main as demo_main

        return demo_main(rest)
    if command in ("run", "status", "stop"):
        from . import app_commands

        return {
            "run": app_commands.run_main,
            "status": app_commands.status_main,
            "stop": app_commands.stop_main,
        }[command](rest)
    print(f"relay-actors: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
