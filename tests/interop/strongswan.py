"""strongSwan as an interop peer: swanctl.conf builder, a private charon per namespace, SA listing.

Owns what the shared lab does with ``strongswan-start.sh``, ``sw.sh`` and ``conf/gen-peer.sh``, in
Python, so the project's own tests can run IKEv1 (Main Mode + Quick Mode, RFC 2409) against a real
charon without the lab scripts:

- ``SwanctlConfig`` / ``Connection`` / ``Child`` / ``Secret`` render swanctl.conf text (IKEv1 Main
  Mode, PSK, rekeying and DPD off), with ``SwanctlConfig.lab_peer`` and ``.responder`` reproducing
  ``gen-peer.sh`` and ``responder.swanctl.conf``.
- ``Charon`` starts ``/usr/lib/ipsec/charon`` inside a network namespace and its own mount namespace
  (a private tmpfs over ``/run``: Debian's charon hard-codes ``/var/run/charon.pid``), with a
  generated strongswan.conf (kernel-libipsec for user-space ESP, the fwmarks that keep IKE out of the
  TUN route, a vici socket and a file log in the state directory), and drives it with ``swanctl``.
- ``parse_list_sas`` turns ``swanctl --list-sas --pretty`` into ``IkeSa`` / ``ChildSa`` records.

Does not own the namespaces (``tests.lab.NetnsPair``) or the pytest fixtures (``conftest.py``).
kernel-libipsec does tunnel mode only and always encapsulates ESP in UDP 4500 (RFC 3948): charon
fakes a NAT, so a peer must speak NAT-T (RFC 3947).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

LAB_PSK = "ABC123"
CHARON = "/usr/lib/ipsec/charon"
SWANCTL = "swanctl"
# Order matters: the first kernel-ipsec backend registered wins, so kernel-libipsec (user-space
# ESP through a TUN device; this kernel has no ESP) precedes kernel-netlink (routes, addresses).
DEFAULT_PLUGINS = (
    "random nonce openssl aes sha1 sha2 hmac gmp kdf pem pkcs1 x509 pubkey revocation "
    "kernel-libipsec kernel-netlink socket-default vici updown"
).split()
LAB_IKE_PROPOSALS = ("3des-sha1-modp1024", "aes128-sha1-modp2048")
LAB_ESP_PROPOSALS = ("aes128-sha1", "3des-sha1")
RESPONDER_IKE_PROPOSALS = (*LAB_IKE_PROPOSALS, "aes128-sha1-modp1024", "aes256-sha256-modp2048")
RESPONDER_ESP_PROPOSALS = (*LAB_ESP_PROPOSALS, "aes128-sha1-modp2048", "3des-sha1-modp1024")
# swanctl --load-creds reads these next to swanctl.conf and complains when they are missing.
_CRED_DIRS = "x509 x509ca x509ocsp x509aa x509ac x509crl pubkey private rsa ecdsa bliss pkcs8 pkcs12".split()
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_VALUE_FORBIDDEN = re.compile(r'[\n\r{}"#]')


class StrongswanError(RuntimeError):
    """A charon instance could not be started, configured or queried."""


class SwanctlError(StrongswanError):
    """``swanctl`` exited non-zero; carries its argv, exit code and output."""

    def __init__(self, argv: Sequence[str], returncode: int, output: str, log_tail: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output
        msg = f"{' '.join(self.argv)} exited {returncode}:\n{output.strip()}"
        if log_tail:
            msg += f"\n--- charon log (tail) ---\n{log_tail}"
        super().__init__(msg)


# ----------------------------------------------------------------------------- swanctl.conf


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a usable swanctl section name: {name!r}")
    return name


def _render_value(value: object) -> str:
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, (tuple, list)):
        text = ", ".join(str(v) for v in value)
    else:
        text = str(value)
    if _VALUE_FORBIDDEN.search(text):
        raise ValueError(f"swanctl value must not contain newlines, braces, quotes or '#': {text!r}")
    return text


def _render(lines: list[str], depth: int, settings: Mapping[str, object]) -> None:
    pad = "  " * depth
    for key, value in settings.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            lines.append(f"{pad}{_check_name(key)} {{")
            _render(lines, depth + 1, value)
            lines.append(f"{pad}}}")
        else:
            lines.append(f"{pad}{_check_name(key)} = {_render_value(value)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Child:
    """One ``children.<name>`` section: a Quick Mode proposal (RFC 2409 §5.5) charon may negotiate."""

    name: str
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    mode: str = "tunnel"  # libipsec installs tunnel mode only
    esp_proposals: tuple[str, ...] | None = LAB_ESP_PROPOSALS
    ah_proposals: tuple[str, ...] | None = None
    start_action: str = "none"  # "trap" or "start" make charon initiate by itself
    rekey_time: int = 0  # 0: never rekey
    extra: Mapping[str, object] = field(default_factory=dict)

    def settings(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "local_ts": self.local_ts,
            "remote_ts": self.remote_ts,
            "esp_proposals": self.esp_proposals,
            "ah_proposals": self.ah_proposals,
            "rekey_time": self.rekey_time,
            "start_action": self.start_action,
            **self.extra,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Connection:
    """One ``connections.<name>`` section: an IKEv1 Main Mode (PSK) peer and its children."""

    name: str = "hq"
    local_addrs: tuple[str, ...]
    remote_addrs: tuple[str, ...]
    local_id: str | None = None  # None: charon uses the local address
    remote_id: str | None = None  # None: any peer identity (%any)
    proposals: tuple[str, ...] = LAB_IKE_PROPOSALS
    children: tuple[Child, ...] = ()
    version: int = 1
    aggressive: bool = False  # Main Mode (identity protection)
    auth: str = "psk"
    unique: str = "no"
    keyingtries: int = 1
    rekey_time: int = 0
    reauth_time: int = 0
    dpd_delay: int = 0
    extra: Mapping[str, object] = field(default_factory=dict)

    def settings(self) -> dict[str, object]:
        return {
            "version": self.version,
            "aggressive": self.aggressive,
            "local_addrs": self.local_addrs,
            "remote_addrs": self.remote_addrs,
            "unique": self.unique,
            "keyingtries": self.keyingtries,
            "proposals": self.proposals,
            "rekey_time": self.rekey_time,
            "reauth_time": self.reauth_time,
            "dpd_delay": self.dpd_delay,
            **self.extra,
            "local": {"auth": self.auth, "id": self.local_id},
            "remote": {"auth": self.auth, "id": self.remote_id},
            "children": {c.name: c.settings() for c in self.children},
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Secret:
    """One ``secrets.ike-<x>`` pre-shared key; no ``ids`` means it serves any peer."""

    name: str
    secret: str = field(repr=False)
    ids: tuple[str, ...] = ()

    def settings(self) -> dict[str, object]:
        # The key is quoted in the file; _render_value refuses quotes, so check it here.
        if not self.secret or _VALUE_FORBIDDEN.search(self.secret) or "\\" in self.secret:
            raise ValueError("pre-shared key must be non-empty without quotes, braces, '#' or newlines")
        ids = {f"id-{i}": v for i, v in enumerate(self.ids)}
        return {**ids, "secret": f'"{self.secret}"'}


@dataclass(frozen=True, slots=True, kw_only=True)
class SwanctlConfig:
    """A whole swanctl.conf: ``render()`` gives the text ``swanctl --load-all --file`` reads."""

    connections: tuple[Connection, ...]
    secrets: tuple[Secret, ...] = ()

    def render(self) -> str:
        lines: list[str] = ["connections {"]
        _render(lines, 1, {c.name: c.settings() for c in self.connections})
        lines += ["}", "secrets {"]
        for s in self.secrets:
            lines.append(f"  ike-{_check_name(s.name)} {{")
            for key, value in s.settings().items():
                # the quoted secret bypasses _render_value, which would refuse the quotes
                text = value if key == "secret" else _render_value(value)
                lines.append(f"    {key} = {text}")
            lines.append("  }")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def connection(self, name: str) -> Connection:
        return next(c for c in self.connections if c.name == name)

    @classmethod
    def lab_peer(
        cls,
        local: str,
        remote: str,
        local_inner: str,
        remote_inner: str,
        *,
        psk: str = LAB_PSK,
        name: str = "hq",
        proposals: Sequence[str] = LAB_IKE_PROPOSALS,
        esp_proposals: Sequence[str] = LAB_ESP_PROPOSALS,
        children: Sequence[str] = ("net", "host", "trans"),
        start_action: str = "none",
    ) -> SwanctlConfig:
        """One side of the lab's IKEv1/PSK pair, as ``conf/gen-peer.sh`` writes it.

        Children: ``net`` (inner /32s, tunnel mode), ``host`` (the IKE peers themselves, tunnel mode;
        needs ``allow_peer_ts`` and the fwmarks), ``trans`` (transport mode: libipsec refuses it).
        """
        esp = tuple(esp_proposals)
        known = {
            "net": Child(name="net", local_ts=(f"{local_inner}/32",), remote_ts=(f"{remote_inner}/32",)),
            "host": Child(name="host", local_ts=(f"{local}/32",), remote_ts=(f"{remote}/32",)),
            "trans": Child(name="trans", mode="transport", local_ts=(f"{local}/32",), remote_ts=(f"{remote}/32",)),
        }
        kids = tuple(
            Child(
                name=k.name,
                mode=k.mode,
                local_ts=k.local_ts,
                remote_ts=k.remote_ts,
                esp_proposals=esp,
                start_action=start_action,
            )
            for k in (known[c] for c in children)
        )
        conn = Connection(
            name=name,
            local_addrs=(local,),
            remote_addrs=(remote,),
            local_id=local,
            remote_id=remote,
            proposals=tuple(proposals),
            children=kids,
        )
        secrets = (Secret(name="hq", secret=psk, ids=(local, remote)), Secret(name="any", secret=psk))
        return cls(connections=(conn,), secrets=secrets)

    @classmethod
    def for_pair(cls, pair: Any, side: int, **kw: Any) -> SwanctlConfig:
        """``lab_peer`` for side 0 or 1 of a ``tests.lab.NetnsPair`` (its addresses and inner /32s)."""
        other = 1 - side
        return cls.lab_peer(pair.addrs[side], pair.addrs[other], pair.inner[side], pair.inner[other], **kw)

    @classmethod
    def responder(
        cls,
        local: str,
        local_inner: str,
        *,
        psk: str = LAB_PSK,
        name: str = "resp",
        proposals: Sequence[str] = RESPONDER_IKE_PROPOSALS,
        esp_proposals: Sequence[str] = RESPONDER_ESP_PROPOSALS,
        remote_ts: Sequence[str] = ("0.0.0.0/0",),
    ) -> SwanctlConfig:
        """A responder for any initiator address and identity (``conf/responder.swanctl.conf``)."""
        child = Child(
            name="net",
            local_ts=(f"{local_inner}/32",),
            remote_ts=tuple(remote_ts),
            esp_proposals=tuple(esp_proposals),
        )
        conn = Connection(
            name=name,
            local_addrs=(local,),
            remote_addrs=("%any",),
            local_id=local,
            proposals=tuple(proposals),
            children=(child,),
        )
        return cls(connections=(conn,), secrets=(Secret(name="any", secret=psk),))


# ----------------------------------------------------------------------------- --list-sas


def parse_vici_pretty(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Parse ``swanctl ... --pretty`` output into ``(message label, tree)`` pairs, in order.

    Sections become dicts, lists become lists of strings, values stay strings (the rest of the line,
    so values with spaces survive). Lines outside any message (swanctl's log lines) are ignored.
    """
    messages: list[tuple[str, dict[str, Any]]] = []
    stack: list[dict[str, Any]] = []
    current_list: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if current_list is not None:
            if line == "]":
                current_list = None
            else:
                current_list.append(line)
            continue
        if line.endswith("{") and " = " not in line:
            section: dict[str, Any] = {}
            label = line[:-1].rstrip()
            if stack:
                stack[-1][label] = section
            else:
                messages.append((label, section))
            stack.append(section)
        elif line == "}":
            if not stack:
                raise StrongswanError(f"unbalanced '}}' in swanctl output: {text[:200]!r}")
            stack.pop()
        elif not stack:
            continue  # log or status line between messages
        elif line.endswith("= ["):
            current_list = stack[-1].setdefault(line[:-3].rstrip(), [])
        elif " = " in line:
            key, value = line.split(" = ", 1)
            stack[-1][key.strip()] = value
        elif line.endswith(" ="):
            stack[-1][line[:-2].strip()] = ""
        else:
            raise StrongswanError(f"unexpected line in swanctl output: {line!r}")
    if stack or current_list is not None:
        raise StrongswanError("swanctl output ended inside a section")
    return messages


def _from_tree(cls: type[T], d: Mapping[str, Any], **given: Any) -> T:
    """Fill a record from a vici section: field ``is_encap`` <- key ``encap``, ``install_time_s`` <-
    ``install-time``; the annotation picks the conversion (SPIs and CPIs are hex, flags yes/1)."""
    kw = dict(given)
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in kw:
            continue
        v = d.get(f.name.removeprefix("is_").removesuffix("_s").replace("_", "-"))
        if f.type == "bool":
            kw[f.name] = v in ("yes", "1")
        elif f.type.startswith("int"):
            base = 16 if f.name.startswith(("spi", "cpi")) or f.name.endswith("_spi") else 10
            kw[f.name] = None if v in (None, "") and "None" in f.type else int(v, base)
        elif f.type == "tuple[str, ...]":
            kw[f.name] = tuple(v or ())
        else:
            kw[f.name] = v if v is not None or "None" in f.type else ""
    return cls(**kw)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildSa:
    """One CHILD_SA (a Quick Mode SA pair) as charon lists it; SPIs and CPIs are ints."""

    key: str  # the section name, e.g. "net-1"
    name: str
    uniqueid: int
    reqid: int | None
    state: str  # INSTALLED, CREATED, REKEYING, DELETING, ...
    mode: str  # TUNNEL, TRANSPORT
    protocol: str  # ESP, AH
    is_encap: bool  # ESP in UDP (RFC 3948)
    spi_in: int | None
    spi_out: int | None
    cpi_in: int | None
    cpi_out: int | None
    encr_alg: str | None
    encr_keysize: int | None
    integ_alg: str | None
    integ_keysize: int | None
    dh_group: str | None  # PFS group of the Quick Mode
    esn: bool
    bytes_in: int | None
    packets_in: int | None
    bytes_out: int | None
    packets_out: int | None
    install_time_s: int | None  # seconds since installation
    rekey_time_s: int | None  # seconds until rekeying
    life_time_s: int | None  # seconds until expiry
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class IkeSa:
    """One IKE SA (ISAKMP SA for IKEv1) as charon lists it; the cookies are ints."""

    name: str  # connection name, "(unnamed)" for half-open responder SAs
    uniqueid: int
    version: int
    state: str  # CONNECTING, ESTABLISHED, DELETING, ...
    local_host: str | None
    local_port: int | None
    local_id: str | None
    remote_host: str | None
    remote_port: int | None
    remote_id: str | None
    is_initiator: bool
    initiator_spi: int | None  # CKY-I
    responder_spi: int | None  # CKY-R
    nat_local: bool
    nat_remote: bool
    nat_fake: bool
    nat_any: bool
    encr_alg: str | None
    encr_keysize: int | None
    integ_alg: str | None
    prf_alg: str | None
    dh_group: str | None
    established_s: int | None  # seconds since establishment
    children: tuple[ChildSa, ...]
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    def child(self, name: str) -> ChildSa | None:
        """The first CHILD_SA named ``name`` (the config name, not the ``net-1`` key)."""
        return next((c for c in self.children if c.name == name), None)


def parse_list_sas(text: str) -> list[IkeSa]:
    """``swanctl --list-sas --pretty`` output -> one ``IkeSa`` per ``list-sa`` event."""
    sas: list[IkeSa] = []
    for label, tree in parse_vici_pretty(text):
        if label != "list-sa event":
            continue
        for name, d in tree.items():
            try:
                kids = tuple(
                    _from_tree(ChildSa, c, key=k, name=c.get("name", k), raw=c)
                    for k, c in (d.get("child-sas") or {}).items()
                )
                sas.append(_from_tree(IkeSa, d, name=name, children=kids, raw=d))
            except (TypeError, ValueError, AttributeError) as exc:
                raise StrongswanError(f"unexpected list-sas entry {name!r}: {exc}") from exc
    return sas


def find_children(sas: Sequence[IkeSa], name: str | None = None, state: str | None = None) -> list[ChildSa]:
    """All CHILD_SAs of ``sas`` with the given config name and/or state."""
    return [
        c
        for ike in sas
        for c in ike.children
        if (name is None or c.name == name) and (state is None or c.state == state)
    ]


# ----------------------------------------------------------------------------- charon


class Charon:
    """A private charon in a network namespace, tracked by PID, controlled through its vici socket.

    ``start`` writes ``strongswan.conf`` and ``swanctl.conf`` into ``state_dir`` (which also holds
    the vici socket, ``charon.log`` and ``charon.stdout``); ``stop`` kills by the recorded PID only.
    """

    def __init__(
        self,
        name: str = "charon",
        *,
        log_level: int = 1,
        plugins: Sequence[str] = DEFAULT_PLUGINS,
        settings: Mapping[str, object] | None = None,
        charon_path: str = CHARON,
        swanctl_path: str = SWANCTL,
        die_with_parent: bool = True,
    ) -> None:
        self.name = name
        self.die_with_parent = die_with_parent
        self.log_level = log_level
        self.plugins = tuple(plugins)
        self.settings = dict(settings or {})  # extra ``charon { key = value }`` entries
        self.charon_path = charon_path
        self.swanctl_path = swanctl_path
        self.netns: str | None = None
        self.state_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- paths
    def _dir(self) -> Path:
        if self.state_dir is None:
            raise StrongswanError(f"charon {self.name} was never started")
        return self.state_dir

    @property
    def vici_path(self) -> Path:
        return self._dir() / "charon.vici"

    @property
    def vici_uri(self) -> str:
        return f"unix://{self.vici_path}"

    @property
    def log_path(self) -> Path:
        return self._dir() / "charon.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def strongswan_conf(self) -> str:
        """The generated strongswan.conf (for charon and for our swanctl calls)."""
        d = self._dir()
        lvl = self.log_level
        extra = "\n".join(f"  {_check_name(k)} = {_render_value(v)}" for k, v in self.settings.items())
        return f"""charon {{
  load_modular = no
  load = {' '.join(self.plugins)}
  install_routes = yes
  # IKE and libipsec's ESP-in-UDP (same sockets) carry mark 0x42 and so bypass routing table 220,
  # which sends protected traffic into the TUN device; with allow_peer_ts this permits
  # host-to-host SAs whose traffic selector is the IKE peer itself.
  plugins {{
    vici {{ socket = unix://{d}/charon.vici }}
    kernel-libipsec {{ allow_peer_ts = yes }}
    kernel-netlink {{ fwmark = !0x42 }}
    socket-default {{ fwmark = 0x42 }}
  }}
{extra}
  filelog {{
    lab {{
      path = {d}/charon.log
      append = no
      flush_line = yes
      time_format = %H:%M:%S
      time_add_ms = yes
      default = {lvl}
      ike = {lvl}
      cfg = {lvl}
      knl = {lvl}
      esp = {lvl}
      net = {1 if lvl > 0 else 0}
    }}
  }}
  syslog {{ daemon {{ default = -1 }} }}
}}
swanctl {{ socket = unix://{d}/charon.vici }}
"""

    def start(self, netns: str, conf: SwanctlConfig | str, state_dir: Path | str, *, timeout: float = 10.0) -> None:
        """Launch charon in ``netns``, wait for its vici socket, then load ``conf``.

        On any failure the process is stopped again and ``StrongswanError`` carries its output.
        With ``die_with_parent`` charon gets SIGTERM when the *thread* that started it ends (Linux
        parent-death signal), so start it from the main thread, not from ``asyncio.to_thread``.
        """
        if self.running:
            raise StrongswanError(f"charon {self.name} already started (pid {self.pid})")
        d = Path(state_dir).resolve()
        if d == Path("/run") or Path("/run") in d.parents or Path("/var/run") in d.parents:
            raise StrongswanError("state_dir must not be under /run: charon gets a private tmpfs there")
        d.mkdir(parents=True, exist_ok=True)
        for sub in _CRED_DIRS:
            (d / sub).mkdir(exist_ok=True)
        self.netns, self.state_dir = netns, d
        self.vici_path.unlink(missing_ok=True)
        (d / "strongswan.conf").write_text(self.strongswan_conf())
        # ``ip netns exec``, ``unshare``, the shell and ``setpriv`` each exec() the next, so the
        # Popen PID is charon's own. The private /run hides the host's /run/charon.pid. The
        # parent-death signal ends charon if the test process itself is killed (no teardown ran).
        pdeath = "setpriv --pdeathsig TERM " if self.die_with_parent else ""
        script = f'mount -t tmpfs pyipsec-run /run || exit 1; exec {pdeath}"$0"'
        argv = ["ip", "netns", "exec", netns, "unshare", "-m", "--propagation", "private"]
        argv += ["sh", "-c", script, self.charon_path]
        with open(d / "charon.stdout", "wb") as out:
            self._proc = subprocess.Popen(
                argv, env=self._env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_for_vici(timeout)
            self.load(conf)
        except BaseException:
            self.stop()
            raise

    def _env(self) -> dict[str, str]:
        # swanctl looks for its credential directories (x509, private, ...) next to --file.
        return {**os.environ, "STRONGSWAN_CONF": str(self._dir() / "strongswan.conf")}

    def _wait_for_vici(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.vici_path.is_socket():
            if self._proc is not None and self._proc.poll() is not None:
                raise StrongswanError(
                    f"charon {self.name} exited {self._proc.returncode} during start-up:\n{self._outputs()}"
                )
            if time.monotonic() > deadline:
                raise StrongswanError(f"charon {self.name}: no vici socket after {timeout} s:\n{self._outputs()}")
            time.sleep(0.02)

    def _outputs(self) -> str:
        out = (self._dir() / "charon.stdout").read_text(errors="replace") if self.state_dir else ""
        return (out + self.log_tail()).strip()

    def load(self, conf: SwanctlConfig | str) -> str:
        """Write ``conf`` as this instance's swanctl.conf and (re)load connections and secrets."""
        text = conf.render() if isinstance(conf, SwanctlConfig) else conf
        path = self._dir() / "swanctl.conf"
        path.write_text(text)
        path.chmod(0o600)  # it holds the pre-shared key
        argv = ["--load-all", "--noprompt", "--file", str(path)]
        output = self.swanctl(*argv)
        # swanctl 5.9 exits 0 on a syntax error: it reports "invalid config file", then unloads
        # every connection, as if the file were empty.
        if "invalid config file" in output:
            raise SwanctlError([self.swanctl_path, *argv], 0, output, self.log_tail())
        return output

    # -- swanctl
    def swanctl(self, command: str, *args: str, timeout: float = 20.0, check: bool = True) -> str:
        """Run ``swanctl COMMAND --uri <ours> ARGS...`` and return its combined output.

        swanctl wants the command first, then ``--uri``. Raises ``SwanctlError`` when it fails.
        """
        argv = [self.swanctl_path, command, "--uri", self.vici_uri, *args]
        try:
            proc = subprocess.run(
                argv, env=self._env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise SwanctlError(argv, -1, f"timed out after {timeout} s", self.log_tail()) from exc
        output = proc.stdout + proc.stderr
        if check and proc.returncode != 0:
            raise SwanctlError(argv, proc.returncode, output, self.log_tail())
        return output

    def initiate(self, ike: str, child: str | None = None, *, timeout: float = 10.0, wait: bool = True) -> str:
        """Initiate IKE SA ``ike`` (Main Mode) and, with ``child``, a Quick Mode for that child.

        Returns swanctl's output (charon's log of the exchange) once the initiator has installed the
        SA; the responder may still be processing the last Quick Mode message (use ``wait_for``).
        ``wait=False`` returns at once (``--timeout -1``) while charon goes on: for a peer that this
        same thread drives, e.g. our endpoint on the test's event loop; then poll with ``wait_for``.
        Failing or timing out raises ``SwanctlError``; charon keeps retransmitting after a timeout.
        """
        args = ["--ike", ike, "--timeout", str(max(1, round(timeout))) if wait else "-1"]
        if child is not None:
            args += ["--child", child]
        return self.swanctl("--initiate", *args, timeout=timeout + 5)

    def terminate(
        self,
        *,
        ike: str | None = None,
        child: str | None = None,
        ike_id: int | None = None,
        child_id: int | None = None,
        force: bool = False,
        timeout: float = 5.0,
    ) -> str:
        """Delete SAs by name or unique id (charon sends the IKEv1 Delete payloads, RFC 2408 §3.15)."""
        args: list[str] = []
        for flag, val in (("--ike", ike), ("--child", child), ("--ike-id", ike_id), ("--child-id", child_id)):
            if val is not None:
                args += [flag, str(val)]
        if not args:
            raise ValueError("terminate needs ike, child, ike_id or child_id")
        if force:
            args.append("--force")
        args += ["--timeout", str(max(1, round(timeout)))]
        return self.swanctl("--terminate", *args, timeout=timeout + 5)

    def list_sas(self, ike: str | None = None, *, noblock: bool = False) -> list[IkeSa]:
        """The current IKE SAs with their CHILD_SAs.

        By default charon waits for SAs busy in an exchange, so a listing never silently omits one;
        ``noblock=True`` skips busy SAs instead (``--noblock``), so "no SAs" then proves nothing.
        """
        args = ["--pretty"] + (["--noblock"] if noblock else []) + (["--ike", ike] if ike else [])
        return parse_list_sas(self.swanctl("--list-sas", *args))

    def children(self, name: str | None = None, state: str | None = "INSTALLED") -> list[ChildSa]:
        """CHILD_SAs of all IKE SAs, by default only the installed ones."""
        return find_children(self.list_sas(), name, state)

    def wait_for(
        self, predicate: Callable[[list[IkeSa]], T], *, timeout: float = 10.0, interval: float = 0.05, what: str = ""
    ) -> T:
        """Poll ``list_sas`` until ``predicate(sas)`` is truthy and return that value."""
        deadline = time.monotonic() + timeout
        while True:
            sas = self.list_sas()
            result = predicate(sas)
            if result:
                return result
            if time.monotonic() > deadline:
                raise StrongswanError(
                    f"charon {self.name}: {what or 'condition'} not reached within {timeout} s; SAs now: "
                    f"{sas!r}\n--- charon log (tail) ---\n{self.log_tail()}"
                )
            time.sleep(interval)

    # -- logs and shutdown
    def log(self) -> str:
        """The whole charon log file so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except (FileNotFoundError, StrongswanError):
            return ""

    def deletes_received(self) -> list[tuple[str, int | None]]:
        """Delete payloads charon logged receiving (log level >= 1), in order: ``("ESP", spi)``
        for a CHILD_SA (the SPI is the sender's inbound one, our outbound), ``("IKE", None)``."""
        found = re.finditer(r"received DELETE for (?:(ESP|AH) CHILD_SA with SPI ([0-9a-f]+)|(IKE)_SA)", self.log())
        return [(m[1], int(m[2], 16)) if m[1] else ("IKE", None) for m in found]

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the recorded PID, then SIGKILL after ``timeout``; return the exit status. Idempotent."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        return proc.returncode

    def __repr__(self) -> str:
        return f"Charon({self.name!r}, netns={self.netns!r}, pid={self.pid})"
