"""The `sbworker` command line: run the service, the embedded local stack, and the operators' commands."""

from pathlib import Path

#: The local stack's queues: shipped inside the package (so an installed `sbworker dev` finds it), and the very
#: file docker-compose mounts into the official emulator (infra/servicebus-emulator/Config.json links here).
LOCAL_CONFIG = Path(__file__).resolve().with_name("Config.json")
