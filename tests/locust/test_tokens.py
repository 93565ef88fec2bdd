"""The voter tokens Locust sends with --jwt-private-key (locust/tokens.py),
without any service: for each key type the ingress verifies, a token per
voter that its JWKS verifies, with the claims the ingress checks, kept until
it nears its expiry."""

from __future__ import annotations

import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

import tokens

KEYS = {
    "EdDSA": lambda: ed25519.Ed25519PrivateKey.generate(),
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
}


def pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.parametrize("algorithm", KEYS)
def test_each_voter_gets_a_token_of_its_own_that_the_jwks_verifies(algorithm):
    key = pem(KEYS[algorithm]())
    minter = tokens.Minter(key, kid="k1", issuer="https://front.example", audience="votestream")
    token = minter.token("voter-000001")
    assert jwt.get_unverified_header(token) == {"alg": algorithm, "kid": "k1", "typ": "JWT"}
    jwk = jwt.PyJWKSet.from_dict(tokens.jwks(key, kid="k1"))["k1"]
    claims = jwt.decode(
        token, jwk.key, algorithms=[algorithm], audience="votestream", issuer="https://front.example"
    )
    assert claims["sub"] == "voter-000001"
    assert claims["exp"] - claims["iat"] == tokens.TTL_S
    assert minter.token("voter-000001") == token, "signed once per voter"
    assert jwt.decode(minter.token("voter-000002"), jwk.key, algorithms=[algorithm], audience="votestream")[
        "sub"
    ] == "voter-000002"


def test_the_jwks_holds_the_public_key_alone_with_its_kid_and_algorithm():
    key = pem(KEYS["ES256"]())
    (jwk,) = tokens.jwks(key, kid="2026-12")["keys"]
    assert (jwk["kty"], jwk["crv"], jwk["kid"], jwk["alg"], jwk["use"]) == ("EC", "P-256", "2026-12", "ES256", "sig")
    assert "d" not in jwk, "no private part"


def test_without_issuer_or_audience_the_token_has_neither():
    minter = tokens.Minter(pem(KEYS["EdDSA"]()))
    claims = jwt.decode(minter.token("ana"), options={"verify_signature": False})
    assert set(claims) == {"sub", "iat", "exp"}
    assert jwt.get_unverified_header(minter.token("ana"))["kid"] == tokens.DEFAULT_KID


def test_a_token_near_its_expiry_is_signed_again():
    now = [1_800_000_000.0]
    minter = tokens.Minter(pem(KEYS["EdDSA"]()), clock=lambda: now[0])
    first = minter.token("ana")
    now[0] += tokens.TTL_S - tokens.REMINT_S - 1
    assert minter.token("ana") == first
    now[0] += 2
    again = minter.token("ana")
    assert again != first
    assert jwt.decode(again, options={"verify_signature": False})["exp"] == int(now[0]) + tokens.TTL_S


def test_keys_the_ingress_does_not_verify_are_refused():
    with pytest.raises(ValueError, match="Ed25519, EC P-256 or RSA"):
        tokens.Minter(pem(ec.generate_private_key(ec.SECP384R1())))


def test_the_command_prints_the_jwks(tmp_path, capsys):
    path = tmp_path / "voters.pem"
    path.write_bytes(pem(KEYS["EdDSA"]()))
    assert tokens.main([str(path), "--kid", "k9"]) == 0
    (jwk,) = json.loads(capsys.readouterr().out)["keys"]
    assert (jwk["kty"], jwk["crv"], jwk["kid"]) == ("OKP", "Ed25519", "k9")
    assert tokens.main([str(tmp_path / "missing.pem")]) == 1
