"""A throwaway MIT Kerberos KDC for the demo and the tests: one realm under one directory.

Owns starting and stopping a private ``krb5kdc`` for realm RESKIT.COM (by default): it writes
``krb5.conf`` and ``kdc.conf`` into the directory, creates the database with ``kdb5_util``, adds
``host/<fqdn>@REALM`` principals with random keys and exports each key to its own keytab with
``kadmin.local`` (``ktadd -norandkey``: export the key just made, kvno 1), then runs ``krb5kdc``
in the foreground (``-n``) on 127.0.0.1 at a free port, UDP and TCP, and stops it by the PID of
the process it started. Nothing is written under /etc: every program is pointed at the
directory with ``KRB5_CONFIG`` / ``KRB5_KDC_PROFILE``, and ``environ()`` gives the variables a
Kerberos client in this process (the ``gssapi`` package) needs, including ``KRB5RCACHEDIR`` so
the acceptor's replay cache lives in the directory too.

For failure tests: ``remove_host`` deletes a principal from the database while its keytab stays
(a host whose key the KDC does not know), and ``clock_offset_s`` runs the KDC under libfaketime
(apt package ``faketime``) so that its clock differs from ours.

Does not own: the GSS-API mechanics (``ikeproto.gss``) or any policy. Needs the Debian packages
``krb5-kdc`` and ``krb5-admin-server`` (``kadmin.local``); ``missing_programs()`` says which are
absent.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from policyagent.errors import PolicyError

__all__ = [
    "DEFAULT_HOSTS",
    "DEFAULT_REALM",
    "FAKETIME_LIBRARY",
    "KdcError",
    "ThrowawayKdc",
    "find_program",
    "missing_programs",
]

DEFAULT_REALM = "RESKIT.COM"
DEFAULT_HOSTS = ("hq-res-wrk-01.reskit.com", "hq-res-wrk-02.reskit.com")
PROGRAMS = {"krb5kdc": "krb5-kdc", "kdb5_util": "krb5-kdc", "kadmin.local": "krb5-admin-server"}
FAKETIME_LIBRARY = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
_SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")


class KdcError(PolicyError):
    """The throwaway KDC could not be set up or started; the message says what to install or read."""


def find_program(name: str) -> str | None:
    """The path of an MIT Kerberos program (they live in /usr/sbin, often not on PATH)."""
    found = shutil.which(name)
    if found:
        return found
    for d in _SBIN:
        path = os.path.join(d, name)
        if os.access(path, os.X_OK):
            return path
    return None


def missing_programs() -> dict[str, str]:
    """The KDC programs that are not installed, each with the apt package that provides it."""
    return {name: pkg for name, pkg in PROGRAMS.items() if find_program(name) is None}


def _free_port() -> int:
    """A port free on 127.0.0.1 for both TCP and UDP at the time of asking."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise KdcError("no port free for both TCP and UDP on 127.0.0.1")


@dataclass
class ThrowawayKdc:
    """One realm under ``directory``; ``start()`` makes it answer, ``stop()`` ends it (idempotent).

    ``clockskew_s`` is the allowance written to krb5.conf (MIT's default is 300 s);
    ``clock_offset_s`` shifts the KDC's own clock with libfaketime (0: the real clock).
    Usable as a context manager.
    """

    directory: Path
    realm: str = DEFAULT_REALM
    hosts: tuple[str, ...] = DEFAULT_HOSTS
    port: int | None = None
    clockskew_s: int = 300
    clock_offset_s: int = 0
    startup_timeout_s: float = 10.0
    keytabs: dict[str, Path] = field(default_factory=dict, init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).resolve()

    # --- paths and client settings -----------------------------------------------------------

    @property
    def krb5_conf(self) -> Path:
        return self.directory / "krb5.conf"

    @property
    def kdc_conf(self) -> Path:
        return self.directory / "kdc.conf"

    @property
    def log_path(self) -> Path:
        return self.directory / "kdc.log"

    @property
    def pid(self) -> int | None:
        """The PID of the running ``krb5kdc`` (None when stopped)."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def principal(self, host: str) -> str:
        """The machine principal of ``host``: ``host/<fqdn>@REALM``."""
        return f"host/{host}@{self.realm}"

    def environ(self) -> dict[str, str]:
        """The environment a Kerberos client of this realm needs (set it before the first GSS call)."""
        return {
            "KRB5_CONFIG": str(self.krb5_conf),
            "KRB5_KDC_PROFILE": str(self.kdc_conf),
            "KRB5RCACHEDIR": str(self.directory / "rcache"),
            "KRB5CCNAME": f"FILE:{self.directory / 'ccache'}",
        }

    # --- set-up ------------------------------------------------------------------------------

    def start(self) -> ThrowawayKdc:
        """Create the realm, the host principals and keytabs, and start the KDC; wait until it answers."""
        missing = missing_programs()
        if missing:
            packages = " ".join(sorted(set(missing.values())))
            raise KdcError(f"MIT Kerberos KDC programs missing ({', '.join(missing)}): apt-get install {packages}")
        if self.pid is not None:
            raise KdcError(f"the KDC in {self.directory} is already running (pid {self.pid})")
        if self.clock_offset_s and not os.path.exists(FAKETIME_LIBRARY):
            raise KdcError("a KDC clock offset needs libfaketime: apt-get install faketime")
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in ("principal", "principal.ok", "principal.kadm5", "principal.kadm5.lock", "stash", "kdc.log"):
            (self.directory / stale).unlink(missing_ok=True)
        (self.directory / "keytabs").mkdir(exist_ok=True)
        (self.directory / "rcache").mkdir(exist_ok=True)
        if self.port is None:
            self.port = _free_port()
        self._write_profiles()
        master = secrets.token_urlsafe(24)
        self._run(["kdb5_util", "-r", self.realm, "create", "-s", "-P", master], what="create the realm database")
        self.add_hosts(self.hosts)
        self._launch()
        return self

    def _write_profiles(self) -> None:
        d = self.directory
        self.krb5_conf.write_text(
            "[libdefaults]\n"
            f"    default_realm = {self.realm}\n"
            "    dns_lookup_kdc = false\n"
            "    dns_lookup_realm = false\n"
            "    dns_canonicalize_hostname = false\n"
            "    rdns = false\n"
            "    ignore_acceptor_hostname = false\n"
            f"    clockskew = {self.clockskew_s}\n"
            f"    default_ccache_name = FILE:{d / 'ccache'}\n"
            f"    default_keytab_name = FILE:{d / 'keytabs' / 'default.keytab'}\n"
            "[realms]\n"
            f"    {self.realm} = {{\n"
            f"        kdc = 127.0.0.1:{self.port}\n"
            "    }\n"
            "[domain_realm]\n"
            f"    .reskit.com = {self.realm}\n"
            f"    reskit.com = {self.realm}\n"
        )
        (d / "kadm5.acl").write_text("")
        self.kdc_conf.write_text(
            "[kdcdefaults]\n"
            f"    kdc_listen = 127.0.0.1:{self.port}\n"
            f"    kdc_tcp_listen = 127.0.0.1:{self.port}\n"
            "[realms]\n"
            f"    {self.realm} = {{\n"
            f"        database_name = {d / 'principal'}\n"
            f"        key_stash_file = {d / 'stash'}\n"
            f"        acl_file = {d / 'kadm5.acl'}\n"
            "        max_life = 10h 0m 0s\n"
            "        max_renewable_life = 7d 0h 0m 0s\n"
            "        master_key_type = aes256-cts-hmac-sha1-96\n"
            "        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n"
            "    }\n"
            "[logging]\n"
            f"    kdc = FILE:{self.log_path}\n"
            f"    admin_server = FILE:{d / 'kadmin.log'}\n"
        )

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KRB5")}
        env.update(self.environ())
        return env

    def _run(self, argv: list[str], *, what: str, stdin: str | None = None) -> str:
        path = find_program(argv[0])
        assert path is not None  # checked by start()
        proc = subprocess.run([path, *argv[1:]], input=stdin, capture_output=True, text=True, env=self._env(),
                              timeout=30)
        if proc.returncode != 0:
            raise KdcError(f"{argv[0]} failed to {what} (exit {proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout + proc.stderr

    def add_hosts(self, hosts: Iterable[str]) -> dict[str, Path]:
        """Add ``host/<fqdn>`` principals with random keys and export each to its keytab."""
        hosts = list(hosts)
        if not hosts:
            return {}
        commands = []
        for host in hosts:
            keytab = self.directory / "keytabs" / f"{host}.keytab"
            keytab.unlink(missing_ok=True)
            commands.append(f"addprinc -randkey {self.principal(host)}")
            commands.append(f"ktadd -norandkey -k {keytab} {self.principal(host)}")
        out = self._run(["kadmin.local", "-r", self.realm], what="add host principals", stdin="\n".join(commands) + "\n")
        made = {}
        for host in hosts:
            keytab = self.directory / "keytabs" / f"{host}.keytab"
            if not keytab.exists():
                raise KdcError(f"kadmin.local did not export {self.principal(host)}: {out.strip()[-400:]}")
            made[host] = keytab
        self.keytabs.update(made)
        return made

    def remove_host(self, host: str) -> None:
        """Delete ``host``'s principal from the KDC; its keytab stays (the KDC no longer knows the key)."""
        self._run(["kadmin.local", "-r", self.realm, "-q", f"delprinc -force {self.principal(host)}"],
                  what=f"delete {self.principal(host)}")

    def _launch(self) -> None:
        path = find_program("krb5kdc")
        assert path is not None
        env = self._env()
        if self.clock_offset_s:
            env["LD_PRELOAD"] = FAKETIME_LIBRARY
            env["FAKETIME"] = f"{self.clock_offset_s:+d}s"
            env["FAKETIME_DONT_RESET"] = "1"
        with open(self.log_path, "ab") as log:
            # Foreground (-n) so that the PID we hold is the KDC itself; its own session, so a
            # terminal's Ctrl-C does not reach it before our clean-up does.
            self._process = subprocess.Popen([path, "-n", "-r", self.realm], stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=log, env=env, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-800:]
                self._process = None
                raise KdcError(f"krb5kdc exited at start-up; its log ({self.log_path}) ends with: {tail.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port or 0), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise KdcError(f"krb5kdc did not listen on 127.0.0.1:{self.port} within {self.startup_timeout_s} s")

    # --- tear-down ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the KDC we started (SIGTERM, then SIGKILL after 5 s). Safe to call twice."""
        proc, self._process = self._process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> ThrowawayKdc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def keytab(self, host: str) -> Path:
        """The keytab exported for ``host``."""
        try:
            return self.keytabs[host]
        except KeyError:
            raise KdcError(f"no keytab was exported for {host}") from None
