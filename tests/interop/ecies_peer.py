#!/usr/bin/env python3
"""The ECIES P-256 peers for tests/ecies.rs: Volcengine Ark's own key agreement code
(volcengine-ark-runtime) to wrap, and an independent derivation with `cryptography` to unwrap.

Reads one JSON request on stdin, writes one JSON answer on stdout:
  {"op": "certs"}                                  -> P-256 key (PKCS#8 and SEC1), a valid
                                                      certificate, an expired one, a P-384 one
  {"op": "ark-wrap", "cert": PEM, "values": [hex]} -> one header per value, each wrapped with a
                                                      fresh Ark key pair
  {"op": "unwrap", "key": PEM, "headers": [str]}   -> the values, hex
  {"op": "check-cert", "cert": PEM, "key": PEM}    -> what `cryptography` reads in a
                                                      certificate we made, and whether it is
                                                      self-signed and matches the key
"""
import base64
import datetime
import json
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID


def cert(key, days_from, days_to):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sandbox")])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days_from))
        .not_valid_after(now + datetime.timedelta(days=days_to))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )


def certs():
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP384R1())
    pem = lambda fmt: key.private_bytes(
        serialization.Encoding.PEM, fmt, serialization.NoEncryption()
    ).decode()
    return {
        "pkcs8": pem(serialization.PrivateFormat.PKCS8),
        "sec1": pem(serialization.PrivateFormat.TraditionalOpenSSL),
        "cert": cert(key, -1, 30),
        "expired": cert(key, -30, -1),
        "p384": cert(other, -1, 30),
        "public": key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
    }


def ark_wrap(cert_pem, values):
    from volcenginesdkarkruntime._utils._key_agreement import (
        aes_gcm_encrypt_bytes,
        key_agreement_client,
    )

    out = []
    for v in values:
        # A fresh Ark key agreement for every value (Ark itself reuses one per request).
        key, nonce, token = key_agreement_client(cert_pem).generate_ecies_key_pair()
        sealed = aes_gcm_encrypt_bytes(key, nonce, bytes.fromhex(v))
        out.append(token + "." + base64.b64encode(sealed).decode())
    return {"headers": out}


def unwrap(key_pem, headers):
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    out = []
    for h in headers:
        token, sealed = h.split(".")
        point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), base64.b64decode(token))
        z = key.exchange(ec.ECDH(), point)
        okm = HKDF(algorithm=hashes.SHA256(), length=44, salt=None, info=b"").derive(z)
        out.append(AESGCM(okm[:32]).decrypt(okm[32:44], base64.b64decode(sealed), None).hex())
    return {"values": out}


def check_cert(cert_pem, key_pem):
    c = x509.load_pem_x509_certificate(cert_pem.encode())
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    try:
        c.verify_directly_issued_by(c)
        self_signed = True
    except Exception:
        self_signed = False
    pub = lambda k: k.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    ).hex()
    now = datetime.datetime.now(datetime.timezone.utc)
    usage = c.extensions.get_extension_for_class(x509.KeyUsage).value
    return {
        "curve": c.public_key().curve.name,
        "private_curve": key.curve.name,
        "common_name": c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
        "self_signed": self_signed,
        "key_matches": pub(c.public_key()) == pub(key.public_key()),
        "valid_now": c.not_valid_before_utc <= now <= c.not_valid_after_utc,
        "days": (c.not_valid_after_utc - now).days,
        "key_agreement": usage.key_agreement,
        "signature_hash": c.signature_hash_algorithm.name,
    }


req = json.load(sys.stdin)
if req["op"] == "certs":
    ans = certs()
elif req["op"] == "check-cert":
    ans = check_cert(req["cert"], req["key"])
elif req["op"] == "ark-wrap":
    ans = ark_wrap(req["cert"], req["values"])
else:
    ans = unwrap(req["key"], req["headers"])
json.dump(ans, sys.stdout)
