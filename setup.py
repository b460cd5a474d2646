"""The optional C accelerator of espcore's AEAD path (everything else is in pyproject.toml).

``espcore._aead`` binds OpenSSL's EVP AEAD interface (as aioquic does for QUIC packets): it needs
a C compiler and OpenSSL's headers (Debian: ``apt-get install gcc libssl-dev``). It is optional:
where it cannot be built, the install goes on and espcore uses ``cryptography`` alone.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("espcore._aead", ["espcore/_aead.c"], libraries=["crypto"],
                             optional=True)])
