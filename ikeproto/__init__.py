"""ikeproto: ISAKMP (RFC 2408) and IKEv1 (RFC 2409, IPsec DOI RFC 2407), sans-I/O."""
