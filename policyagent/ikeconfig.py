"""The assigned policy as IKE sees it: an ``ikeproto.config.ConfigProvider`` and initiator configs.

Owns the translation from the Windows policy model to the endpoint's records:

- **Main mode** (``phase1_config``): the seed ("Only One Authentication Method Between a Pair of
  Hosts"): main mode sees only addresses, so the rule is ``Matcher.lookup_peer`` (the most
  address-specific Negotiate rule covering the pair, else the default response rule). Its
  authentication methods, in order, become proposals crossed with the policy's main-mode
  methods (cipher, hash, DH group, master-key lifetime, RFC 2409 §5 / Appendix A). Kerberos
  becomes ``gssapi`` with this computer's credentials (``Phase1Config.kerberos``; the expected
  peer principal from the agent's address map, since the policy model names none), or, without
  credentials, a substitute pre-shared key when the caller says so (the demo without a KDC).
  A rule's certificate methods (contiguous, validation ensures it) become one ``rsa-sig``
  choice at the place of the first, authenticated by ``certstore.authenticator_for`` over the
  machine store (built once per rule and store; a rule none of whose root CAs the store trusts
  cannot use certificates).
- **Quick mode, initiator** (``phase2_for``): the filter that matched the packet, oriented as
  the packet matched it, *instantiated* for the packet's hosts in transport mode (the seed's
  event 541 shows host addresses with mask 255.255.255.255, and protocol/ports from the filter),
  or as written (subnets) in tunnel mode; its filter action's security methods in order become
  proposals (AH before ESP when both: the AH+ESP bundle); session-key PFS uses the first main
  mode group.
- **Quick mode, responder** (``phase2_config``): what the matcher says about the traffic the
  peer proposes (as an inbound packet from the peer's selector to ours): a Negotiate rule answers
  with its methods; no rule, or a Permit rule, is answered by the default response rule when the
  policy has one (the seed: Client (Respond Only) "answers when asked"); Block, or no default
  response rule, refuses (NO-PROPOSAL-CHOSEN). Transport-mode selectors must name the peer and us.

Pure lookups: no I/O, no clock (the machine store is read by the agent and handed in).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ikeproto.config import (Address, IpsecTransform, Mode, Phase1Config, Phase1Proposal,
                             Phase2Config, Phase2Proposal, TrafficSelector)
from policyagent.certstore import MachineStore, authenticator_for, system_time
from policyagent.errors import PolicyError
from policyagent.matcher import Decision, Direction, Matcher, Packet, Verdict
from policyagent.model import (DEFAULT_QM_LIFETIME_KB, DEFAULT_QM_LIFETIME_S, AddressKind,
                               AuthKind, Filter, MainModeMethod, SecurityMethod)
from policyagent.model import Address as FilterAddress

_ESP_CIPHER_ALIASES = {"aes-gcm": "aes-gcm-16"}


def phase1_proposal(method: MainModeMethod, *, auth: str, lifetime_s: int) -> Phase1Proposal:
    """One policy main-mode method as an IKE proposal (``aes-cbc-256`` -> aes-cbc, 256 bits)."""
    cipher, key_bits = method.cipher, None
    if cipher.startswith("aes-cbc-"):
        cipher, key_bits = "aes-cbc", int(method.cipher.rsplit("-", 1)[1])
    return Phase1Proposal(cipher=cipher, hash=method.hash, dh_group=method.dh_group, auth=auth,
                          key_bits=key_bits, lifetime_s=lifetime_s)


def phase2_proposal(method: SecurityMethod) -> Phase2Proposal:
    """One security method as a Quick Mode proposal: AH before ESP (RFC 2401 bundle order)."""
    transforms = []
    if method.ah_integrity is not None:
        transforms.append(IpsecTransform(protocol="ah", integrity=method.ah_integrity))
    if method.esp_cipher is not None:
        cipher = _ESP_CIPHER_ALIASES.get(method.esp_cipher, method.esp_cipher)
        transforms.append(IpsecTransform(protocol="esp", cipher=cipher, key_bits=method.esp_key_bits,
                                         integrity=method.esp_integrity))
    return Phase2Proposal(
        transforms=tuple(transforms),
        lifetime_s=method.lifetime_s if method.lifetime_s is not None else DEFAULT_QM_LIFETIME_S,
        lifetime_kb=method.lifetime_kb if method.lifetime_kb is not None else DEFAULT_QM_LIFETIME_KB,
    )


def _network(address: FilterAddress, host: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A filter side as a selector network (``me``/``any`` instantiated or opened up by mode)."""
    kind = address.kind
    if kind is AddressKind.HOST:
        return ipaddress.ip_network(address.first)
    if kind is AddressKind.SUBNET:
        return ipaddress.ip_network(f"{address.first}/{address.prefix}")
    if kind is AddressKind.ME:
        return ipaddress.ip_network(host)
    if kind is AddressKind.ANY:
        return ipaddress.ip_network("::/0" if ":" in host else "0.0.0.0/0")
    # A range has no single-selector form in a subnet ID: cover it with its smallest subnet.
    first, last = int(address.first), int(address.last)  # type: ignore[arg-type]
    bits = address.first.max_prefixlen  # type: ignore[union-attr]
    shift = (last - first).bit_length()
    base = type(address.first)(first >> shift << shift)
    return ipaddress.ip_network((base, bits - shift))


def selectors_for(decision: Decision, local: str, remote: str, protocol: int,
                  local_port: int | None, remote_port: int | None
                  ) -> tuple[TrafficSelector, TrafficSelector, Mode]:
    """(local_ts, remote_ts, mode) for an outbound packet ``local`` -> ``remote``.

    Transport mode: the two hosts (the seed's 541 shows host masks), the filter's protocol and
    ports. Tunnel mode: the filter's sides as written (addresses only, validation ensures it).
    """
    f: Filter | None = decision.traffic_filter
    proto = f.protocol if f is not None and f.protocol is not None else 0
    lport = f.source_port if f is not None and f.source_port is not None else 0
    rport = f.destination_port if f is not None and f.destination_port is not None else 0
    if decision.is_tunnel and f is not None:
        return (TrafficSelector(network=_network(f.source, local)),
                TrafficSelector(network=_network(f.destination, remote)), "tunnel")
    return (TrafficSelector.host(local, proto, lport), TrafficSelector.host(remote, proto, rport),
            "transport")


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthChoice:
    """What authentication a rule ends up using with IKE, and how the audit names it."""

    auth: str  # ikeproto name: psk, gssapi, rsa-sig
    psk: bytes | None
    label: str  # "Preshared key", "Kerberos", "Kerberos (pre-shared key substitute)", "Certificate"
    certificates: Any = None  # rsa-sig: the rule's ``ikeproto.certs.CertificateAuthenticator``


class PolicyConfig:
    """An ``ikeproto.config.ConfigProvider`` answering from the assigned policy.

    ``local_address`` is our IKE address; ``force_encapsulation`` fakes a NAT so ESP rides in
    UDP (the embedded path); ``kerberos`` is this computer's Kerberos credentials (any
    ``ikeproto.gss.GssMechanism``) and ``kerberos_peers`` the principal each peer address must
    authenticate as; without credentials ``kerberos_psk`` replaces Kerberos by this pre-shared
    key (when no KDC is available; the caller says so to the user); ``has_kerberos`` offers
    GSS-API even without credentials here (a test of the proposals only). Certificates come
    from ``set_certificates``.
    """

    def __init__(self, matcher: Matcher | None, local_address: str, *,
                 force_encapsulation: bool = False, kerberos_psk: bytes | None = None,
                 has_kerberos: bool = False, kerberos: Any = None,
                 kerberos_peers: Mapping[str, str] | None = None) -> None:
        self.matcher = matcher
        self.local_address = local_address
        self.force_encapsulation = force_encapsulation
        self.kerberos_psk = kerberos_psk
        self.kerberos = kerberos
        self.kerberos_peers = dict(kerberos_peers or {})
        self.has_kerberos = has_kerberos or kerberos is not None
        self.cert_store: MachineStore | None = None
        self._certificate_time: Callable[[float], Any] = system_time
        self._authenticators: dict[tuple, Any] = {}
        self.certificate_problems: dict[tuple, str] = {}

    def set_certificates(self, store: MachineStore | None, *,
                         validation_time: Callable[[float], Any] | None = None) -> None:
        """Use ``store`` (None: no certificates) for the rules' certificate methods from now on."""
        self.cert_store = store
        self._certificate_time = validation_time or system_time
        self._authenticators.clear()
        self.certificate_problems.clear()

    def authenticator(self, methods: tuple) -> Any:
        """The ``CertificateAuthenticator`` for a rule's certificate methods (None: unusable)."""
        if self.cert_store is None:
            return None
        if methods not in self._authenticators:
            try:
                found = authenticator_for(methods, self.cert_store, validation_time=self._certificate_time)
            except PolicyError as exc:  # none of the rule's root CAs is trusted by the store
                self.certificate_problems[methods] = str(exc)
                found = None
            self._authenticators[methods] = found
        return self._authenticators[methods]

    # -- main mode --------------------------------------------------------------------------------

    def auth_choices(self, decision: Decision) -> list[AuthChoice]:
        """The rule's authentication methods that can run, in the rule's order."""
        out = []
        methods = tuple(decision.authentication)
        for method in methods:
            if method.kind is AuthKind.PRESHARED_KEY and method.key:
                out.append(AuthChoice(auth="psk", psk=method.key.encode("utf-8"), label="Preshared key"))
            elif method.kind is AuthKind.KERBEROS:
                if self.kerberos is None and self.kerberos_psk is not None:
                    out.append(AuthChoice(auth="psk", psk=self.kerberos_psk,
                                          label="Kerberos (pre-shared key substitute)"))
                elif self.has_kerberos:
                    out.append(AuthChoice(auth="gssapi", psk=None, label="Kerberos"))
            elif method.kind is AuthKind.CERTIFICATE and not any(c.auth == "rsa-sig" for c in out):
                certs = tuple(m for m in methods if m.kind is AuthKind.CERTIFICATE)
                authenticator = self.authenticator(certs)
                if authenticator is not None:
                    out.append(AuthChoice(auth="rsa-sig", psk=None, label="Certificate",
                                          certificates=authenticator))
        return out

    def peer_decision(self, peer_ip: str) -> Decision | None:
        if self.matcher is None:
            return None
        return self.matcher.lookup_peer(self.local_address, peer_ip)

    def phase1_config(self, peer: Address) -> Phase1Config | None:
        """Main mode settings for ``peer``: the host pair's rule (None refuses the peer)."""
        decision = self.peer_decision(peer[0])
        if decision is None or decision.key_exchange is None:
            return None
        choices = self.auth_choices(decision)
        if not choices:
            return None
        psk = next((c.psk for c in choices if c.psk is not None), None)
        # One pre-shared key per peer: a second PSK method cannot be offered alongside.
        usable = [c for c in choices if c.auth != "psk" or c.psk == psk]
        lifetime_s = decision.key_exchange.lifetime_s
        proposals = tuple(phase1_proposal(m, auth=c.auth, lifetime_s=lifetime_s)
                          for c in _unique_auths(usable) for m in decision.main_mode_methods)
        # The embedded path fakes a NAT (ESP in UDP without raw sockets) and carries whole AH
        # packets itself, so AH stays negotiable there (never through a real NAT, RFC 3947 §5).
        extra: dict[str, Any] = {}
        if self.kerberos is not None and any(c.auth == "gssapi" for c in usable):
            extra["kerberos"] = self.kerberos
            extra["kerberos_peer"] = self.kerberos_peers.get(peer[0])
        certificates = next((c.certificates for c in usable if c.auth == "rsa-sig"), None)
        if certificates is not None:
            extra["certificates"] = certificates
        return Phase1Config(proposals=proposals, psk=psk,
                            force_encapsulation=self.force_encapsulation,
                            allow_ah_with_nat=self.force_encapsulation, **extra)

    # -- quick mode -------------------------------------------------------------------------------

    def _pfs_group(self, decision: Decision) -> int | None:
        if not decision.has_session_key_pfs:
            return None
        methods = decision.main_mode_methods
        return methods[0].dh_group if methods else 14

    def phase2_for(self, decision: Decision, local_ts: TrafficSelector,
                   remote_ts: TrafficSelector, mode: Mode) -> Phase2Config | None:
        """The initiator's Quick Mode config for a Negotiate decision."""
        proposals = tuple(phase2_proposal(m) for m in decision.security_methods)
        if not proposals:
            return None
        return Phase2Config(proposals=proposals, local_ts=local_ts, remote_ts=remote_ts, mode=mode,
                            pfs_group=self._pfs_group(decision))

    def responder_decision(self, peer_ip: str, local_ts: TrafficSelector,
                           remote_ts: TrafficSelector, mode: Mode) -> Decision | None:
        """The rule that answers a peer's Quick Mode for these selectors (None: refuse)."""
        if self.matcher is None:
            return None
        if mode == "transport":
            # Transport selectors name the two hosts (RFC 2409 §5.5 IDs; the seed's filters).
            if (local_ts.network.num_addresses != 1 or remote_ts.network.num_addresses != 1
                    or str(remote_ts.network.network_address) != peer_ip):
                return None
        src = remote_ts.network.network_address
        dst = local_ts.network.network_address
        protocol = remote_ts.protocol or local_ts.protocol
        sport = remote_ts.port or None
        dport = local_ts.port or None
        decision = self.matcher.lookup(Packet(src, dst, protocol, sport, dport), Direction.INBOUND)
        if decision.verdict is Verdict.NEGOTIATE:
            if (mode == "tunnel") != decision.is_tunnel:
                return None
            return decision
        if decision.verdict is Verdict.BLOCK:
            return None
        if mode == "tunnel":
            return None
        return self.matcher.default_response

    def phase2_config(self, peer: Address, local_ts: TrafficSelector, remote_ts: TrafficSelector,
                      mode: Mode) -> Phase2Config | None:
        """As responder: what we accept for these selectors (None sends NO-PROPOSAL-CHOSEN)."""
        decision = self.responder_decision(peer[0], local_ts, remote_ts, mode)
        if decision is None:
            return None
        return self.phase2_for(decision, local_ts, remote_ts, mode)


def _unique_auths(choices: list[AuthChoice]) -> list[AuthChoice]:
    seen, out = set(), []
    for c in choices:
        if c.auth not in seen:
            seen.add(c.auth)
            out.append(c)
    return out
