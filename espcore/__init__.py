"""espcore: the ESP (RFC 4303) and AH (RFC 4302) data path. Pure: bytes in, bytes out, no sockets."""
