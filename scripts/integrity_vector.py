#!/usr/bin/env python3
"""Generates testdata/integrity/vector.json from docs/integrity.md with Python `cryptography`
only (no cryptobucket code): the independent check of the integrity format.

    python scripts/integrity_vector.py > testdata/integrity/vector.json
"""
import base64
import json
import struct
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives import hmac


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    h = hmac.HMAC(salt, hashes.SHA256())
    h.update(ikm)
    return h.finalize()


def hkdf_expand(prk: bytes, info: bytes, n: int) -> bytes:
    return HKDFExpand(algorithm=hashes.SHA256(), length=n, info=info).derive(prk)


def case(size: int, chunk: int, mode: str, part_size: int) -> dict:
    cek = bytes(range(32))
    iv = bytes([0xF0, 0xE1, 0xD2, 0xC3, 0xB4, 0xA5, 0x96, 0x87, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xF0])
    object_id = bytes(range(0xA0, 0xB0))
    plaintext = bytes(i % 251 for i in range(size))
    enc = Cipher(algorithms.AES(cek), modes.CTR(iv)).encryptor()
    ct = enc.update(plaintext) + enc.finalize()

    prk = hkdf_extract(object_id, cek + iv)
    tag_key = hkdf_expand(prk, b"cryptobucket/v1 tag key", 32)
    mode_byte = {"bound": 0, "unbound": 1}[mode]
    commitment = hkdf_expand(
        prk,
        b"cryptobucket/v1 commitment" + struct.pack(">IBQ", chunk, mode_byte, part_size),
        32,
    )
    length_field = size if mode == "bound" else 2**64 - 1
    gcm = AESGCM(tag_key)
    tags = []
    for i in range(size // chunk + 1):
        data = ct[i * chunk:(i + 1) * chunk]
        final = 1 if len(data) < chunk else 0
        aad = object_id + struct.pack(">IQQB", chunk, i, length_field, final) + data
        nonce = b"\0\0\0\0" + struct.pack(">Q", i)
        tags.append(gcm.encrypt(nonce, b"", aad))  # GMAC: the tag of an empty plaintext

    seed = bytes([0x42] * 32)
    signer = Ed25519PrivateKey.from_private_bytes(seed)
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    public = signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    signed = (b"cryptobucket/v1 integrity signature\0" + object_id
              + struct.pack(">IB", chunk, mode_byte) + commitment)
    signature = signer.sign(signed)

    sidecar = b"CBTAGS01" + object_id + struct.pack(">II", chunk, 0) + b"".join(tags)
    meta = {
        "cryptobucket-integrity": f"v=1;id={b64url(object_id)};chunk={chunk};length={mode};commit={b64url(commitment)}",
        "cryptobucket-signature": f"{b64url(public)}.{b64url(signature)}",
    }
    if len(tags) <= 4:
        meta["cryptobucket-tags"] = base64.b64encode(b"".join(tags)).decode()
    return {
        "cek": cek.hex(),
        "iv": iv.hex(),
        "object_id": object_id.hex(),
        "size": size,
        "chunk_size": chunk,
        "length_mode": mode,
        "part_size": part_size,
        "plaintext": "bytes(i % 251 for i in range(size))",
        "ciphertext_sha256": __import__("hashlib").sha256(ct).hexdigest(),
        "tag_key": tag_key.hex(),
        "commitment": commitment.hex(),
        "tags": [t.hex() for t in tags],
        "signing_seed": seed.hex(),
        "signer": public.hex(),
        "signature": signature.hex(),
        "metadata": meta,
        "sidecar": sidecar.hex(),
    }


json.dump(
    {
        "generator": "scripts/integrity_vector.py (Python cryptography)",
        "cases": [
            case(10000, 4096, "bound", 0),
            case(8192, 4096, "unbound", 8192),
            case(0, 4096, "bound", 0),
            case(20000, 4096, "bound", 0),
        ],
    },
    sys.stdout,
    indent=1,
)
sys.stdout.write("\n")
