"""Voter tokens for an ingress started with --auth-jwt-keys: Locust signs
one JWT per simulated voter (`sub` = the voter id) with --jwt-private-key,
as the contest's front-end would, and sends it with every request of that
voter. The key is a PEM private key: Ed25519 (EdDSA), EC P-256 (ES256) or
RSA (RS256), the types the ingress verifies.

The ingress needs the matching public key in a JWKS file; this module prints
one:

    openssl genpkey -algorithm ed25519 -out /tmp/voters.pem
    python3 locust/tokens.py /tmp/voters.pem --kid locust > /tmp/jwks.json
    votestream all --auth-jwt-keys /tmp/jwks.json --auth-jwt-audience votestream
    locust -f locust/locustfile.py --headless -u 10 -r 10 -t 1m --voters 1000 \\
        --jwt-private-key /tmp/voters.pem --jwt-audience votestream HttpUser GrpcUser
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

DEFAULT_KID = "locust"
# Tokens live this long, and are signed again when less than REMINT_S is left.
TTL_S = 3600
REMINT_S = 60


def algorithm_of(key) -> str:
    """The JWT algorithm of a private key, among those the ingress verifies."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    raise ValueError("the key must be Ed25519, EC P-256 or RSA")


def load_private_key(pem: bytes):
    key = serialization.load_pem_private_key(pem, password=None)
    algorithm_of(key)  # refuse other types now rather than at the first request
    return key


class Minter:
    """Signs one token per voter and keeps it until it nears its expiry."""

    def __init__(
        self,
        private_key_pem: bytes,
        kid: str = DEFAULT_KID,
        issuer: str | None = None,
        audience: str | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.key = load_private_key(private_key_pem)
        self.algorithm = algorithm_of(self.key)
        self.kid = kid
        self.issuer = issuer
        self.audience = audience
        self._clock = clock
        self._tokens: dict[str, tuple[str, int]] = {}  # voter -> (token, exp)
        self._lock = threading.Lock()

    def token(self, voter: str) -> str:
        now = int(self._clock())
        with self._lock:
            cached = self._tokens.get(voter)
        if cached is not None and cached[1] - now > REMINT_S:
            return cached[0]
        claims = {"sub": voter, "iat": now, "exp": now + TTL_S}
        if self.issuer:
            claims["iss"] = self.issuer
        if self.audience:
            claims["aud"] = self.audience
        token = jwt.encode(claims, self.key, algorithm=self.algorithm, headers={"kid": self.kid})
        with self._lock:
            self._tokens[voter] = (token, now + TTL_S)
        return token


def jwks(private_key_pem: bytes, kid: str = DEFAULT_KID) -> dict:
    """The JWKS (JSON Web Key Set) of the key's public half, for --auth-jwt-keys."""
    key = load_private_key(private_key_pem)
    algorithm = algorithm_of(key)
    to_jwk = {"EdDSA": OKPAlgorithm, "ES256": ECAlgorithm, "RS256": RSAAlgorithm}[algorithm].to_jwk
    jwk = to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid=kid, alg=algorithm, use="sig")
    return {"keys": [jwk]}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Print the JWKS of a voter-token signing key (for --auth-jwt-keys).")
    parser.add_argument("private_key", type=Path, help="PEM private key: Ed25519, EC P-256 or RSA")
    parser.add_argument("--kid", default=DEFAULT_KID, help=f"the key's id, as Locust's --jwt-kid [{DEFAULT_KID}]")
    options = parser.parse_args(argv)
    try:
        print(json.dumps(jwks(options.private_key.read_bytes(), options.kid), indent=2))
    except (OSError, ValueError) as e:
        print(f"tokens: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
