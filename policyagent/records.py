"""Labels and audit records built from IKE events and SA pairs (shared by the agent and monitor).

Owns the human names Windows used for algorithms in events and in the monitor ("DES CBC",
"SHA", "Transport Mode"), peer identity texts ("Preshared key ID: ...", "Kerberos based
Identity: ..."), and the functions that turn ``ikeproto.events`` and ``policyagent.sad.SaPair``
into ``policyagent.audit`` records (541 main/quick mode, soft SA, 542/543, 545-547).
Pure functions, no state.
"""

from __future__ import annotations

from ikeproto.config import Identity
from ikeproto.events import NegotiationFailed, Phase1Established, Phase2Established
from policyagent import audit
from policyagent.sad import SaPair

NO_PROPOSAL_CHOSEN = 14  # RFC 2408 §3.14.1
AUTHENTICATION_FAILED = 24

_CIPHERS = {"des-cbc": "DES CBC", "3des-cbc": "3DES CBC", "aes-cbc": "AES CBC", "null": "None",
            "aes-ctr": "AES CTR", "aes-gcm-8": "AES GCM-8", "aes-gcm-12": "AES GCM-12",
            "aes-gcm-16": "AES GCM", "aes-gmac": "AES GMAC", "chacha20-poly1305": "ChaCha20-Poly1305",
            "des": "DES CBC", "3des": "3DES CBC"}
_HMACS = {"hmac-md5-96": "MD5", "hmac-sha1-96": "SHA", "hmac-sha2-256-128": "SHA-256",
          "hmac-sha2-384-192": "SHA-384", "hmac-sha2-512-256": "SHA-512", "md5": "MD5",
          "sha1": "SHA", "sha2-256": "SHA-256", "sha2-384": "SHA-384", "sha2-512": "SHA-512"}
_AUTHS = {"psk": "Preshared key", "gssapi": "Kerberos", "rsa-sig": "Certificate"}


def cipher_label(name: str | None, key_bits: int | None = None) -> str:
    """``aes-cbc``, 128 -> "AES CBC 128"; ``aes-cbc-256`` -> "AES CBC 256"; None -> "None"."""
    if name is None:
        return "None"
    base, _, bits = name.rpartition("-")
    if bits in ("128", "192", "256") and base in _CIPHERS:
        name, key_bits = base, key_bits or int(bits)
    label = _CIPHERS.get(name, name.upper())
    return f"{label} {key_bits}" if key_bits and name.startswith("aes") else label


def hmac_label(name: str | None) -> str:
    return "None" if name is None else _HMACS.get(name, name.upper())


def identity_label(auth: str | None, identity: Identity | None, peer: str) -> str:
    """The "Peer Identity" text of an event for the authentication method used."""
    value = identity.value if identity is not None else peer
    if isinstance(value, bytes):
        value = value.hex()
    kind = identity.kind if identity is not None else "ipv4"
    if auth == "gssapi":
        return f"Kerberos based Identity: {value}"
    if auth == "rsa-sig":
        return f"Certificate based Identity: {value}"
    return f"Preshared key ID: {kind} {value}"


def encapsulation_label(mode: str, encapsulation: str) -> str:
    text = "Tunnel Mode" if mode == "tunnel" else "Transport Mode"
    return text + (" (UDP-encapsulated)" if encapsulation == "udp" else "")


def security_label(pair: SaPair) -> str:
    """What the monitor's Security column says: "ESP AES CBC 128 / SHA", "AH SHA", "<none>"."""
    if pair.is_soft:
        return "<none>"
    parts = []
    for sa in reversed(pair.outbound):  # negotiated order: AH before ESP
        if sa.protocol == "ah":
            parts.append(f"AH {hmac_label(sa.integrity_name)}")
        else:
            cipher = cipher_label(sa.cipher_name)
            hmac = hmac_label(sa.integrity_name)
            parts.append(f"ESP {cipher}" + (f" / {hmac}" if sa.integrity_name else ""))
    return " + ".join(parts)


def filter_of(pair: SaPair) -> audit.AuditFilter:
    return audit.AuditFilter.from_selectors(pair.local_ts, pair.remote_ts)


def main_mode_established(ev: Phase1Established, *, host: str) -> audit.SaEstablished:
    """541, main mode: the seed says main mode uses just the addresses."""
    return audit.SaEstablished(
        at=ev.at, host=host, mode=audit.MAIN_MODE,
        peer_identity=identity_label(ev.auth, ev.peer_id, ev.peer[0]), peer_address=ev.peer[0],
        filter=audit.AuditFilter.hosts(host, ev.peer[0]),
        parameters=audit.AuditParameters(
            esp_algorithm=cipher_label(ev.cipher, ev.key_bits), hmac_algorithm=hmac_label(ev.hash),
            encapsulation="None", lifetime_s=ev.lifetime_s, dh_group=ev.dh_group,
            authentication=_AUTHS.get(ev.auth, ev.auth)))


def quick_mode_established(ev: Phase2Established, pair: SaPair, *, host: str) -> audit.SaEstablished:
    """541, quick mode: filter, algorithms, encapsulation, both SPIs and the lifetimes."""
    esp = next((c for c in ev.sas if c.protocol == "esp"), None)
    ah = next((c for c in ev.sas if c.protocol == "ah"), None)
    main = esp or ah
    return audit.SaEstablished(
        at=ev.at, host=host, mode=audit.QUICK_MODE, peer_identity=pair.peer_identity,
        peer_address=pair.peer, filter=filter_of(pair),
        parameters=audit.AuditParameters(
            esp_algorithm=cipher_label(esp.cipher, esp.key_bits) if esp else "None",
            hmac_algorithm=hmac_label(esp.integrity) if esp else "None",
            ah_algorithm=hmac_label(ah.integrity) if ah else "None",
            encapsulation=encapsulation_label(ev.mode, ev.encapsulation),
            inbound_spi=main.spi_in if main else 0, outbound_spi=main.spi_out if main else 0,
            lifetime_s=ev.lifetime_s or 0, lifetime_kb=ev.lifetime_kb or 0))


def soft_sa_established(pair: SaPair, *, at: float, host: str) -> audit.SaEstablished:
    """The soft SA event: the peer did not answer, traffic goes in clear."""
    return audit.SaEstablished(at=at, host=host, mode=audit.QUICK_MODE, peer_identity="",
                               peer_address=pair.peer, filter=filter_of(pair), soft=True)


def quick_mode_ended(pair: SaPair, *, at: float, host: str, reason: str) -> audit.SaEnded:
    """542: both SPIs of the pair that ended and why (expired, idle, deleted by peer...)."""
    return audit.SaEnded(at=at, host=host, mode=audit.QUICK_MODE, peer_address=pair.peer,
                         filter=filter_of(pair), inbound_spi=pair.spis_in[-1] if pair.spis_in else 0,
                         outbound_spi=pair.spis_out[-1] if pair.spis_out else 0, reason=reason)


def main_mode_ended(peer: str, *, at: float, host: str, reason: str) -> audit.SaEnded:
    """543."""
    return audit.SaEnded(at=at, host=host, mode=audit.MAIN_MODE, peer_address=peer,
                         filter=audit.AuditFilter.hosts(host, peer), reason=reason)


def negotiation_failed(ev: NegotiationFailed, *, host: str, filter: audit.AuditFilter | None,
                       answered: bool, auth: str | None, offered: str = "") -> audit.AuditEvent:
    """546 for NO-PROPOSAL-CHOSEN, 545 for a failed Kerberos authentication, else 547."""
    mode = audit.MAIN_MODE if ev.phase == 1 else audit.QUICK_MODE
    flt = filter or audit.AuditFilter.hosts(host, ev.peer[0])
    point = "Me" if ev.failure_point == "me" else "Peer"
    if ev.timed_out and not answered:
        return audit.NegotiationFailed(at=ev.at, host=host, mode=mode, peer_address=ev.peer[0],
                                       filter=flt, failure_point="Peer",
                                       reason="No response from peer")
    if ev.notify == NO_PROPOSAL_CHOSEN:
        return audit.InvalidProposal(at=ev.at, host=host, mode=mode, peer_address=ev.peer[0],
                                     filter=flt, attribute="security methods",
                                     expected=offered or "one of this policy's methods",
                                     received="no acceptable proposal", reason=ev.reason)
    if auth == "gssapi" and ev.phase == 1 and (ev.notify == AUTHENTICATION_FAILED
                                              or "auth" in ev.reason.lower()):
        return audit.KerberosFailed(at=ev.at, host=host, peer_address=ev.peer[0], reason=ev.reason)
    return audit.NegotiationFailed(at=ev.at, host=host, mode=mode, peer_address=ev.peer[0],
                                   filter=flt, failure_point=point, reason=ev.reason)
