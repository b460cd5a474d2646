"""Shared by the commands that talk to a running service: ``--via`` and the socket it names."""

from __future__ import annotations

import argparse
from pathlib import Path

from policyagent.control import SOCKET_NAME, socket_path
from policyagent.store import default_store_dir


def add_via(p: argparse.ArgumentParser) -> None:
    p.add_argument("--via", metavar="SOCKET|DIR",
                   help="the service's control socket, or its store directory "
                        f"(default: $POLICYAGENT_HOME/{SOCKET_NAME})")


def via_path(args: argparse.Namespace) -> Path:
    return socket_path(args.via) if args.via else default_store_dir() / SOCKET_NAME
