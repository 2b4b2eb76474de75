#!/usr/bin/env python3
"""An independent implementation of the passphrase key wrap (src/keys/passphrase.rs) with
argon2-cffi and `cryptography`, for tests/passphrase.rs. One JSON request on stdin, one answer:
  {"op": "unwrap", "passphrase": str, "key": header, "iv": header} -> {"cek": hex, "iv": hex}
  {"op": "wrap", "passphrase": str, "cek": hex, "iv": hex, "m": int, "t": int, "p": int}
      -> {"key": header, "iv": header}
"""
import base64
import json
import os
import sys

from argon2.low_level import Type, hash_secret_raw
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CEK_ALG = "AES/CTR/NoPadding"


def kek(passphrase, salt, m, t, p):
    return hash_secret_raw(passphrase.encode(), salt, time_cost=t, memory_cost=m,
                           parallelism=p, hash_len=32, type=Type.ID, version=19)


def aad(which, prefix):
    return f"cryptobucket/passphrase/v1|{which}|{CEK_ALG}|{prefix}".encode()


def unwrap(req):
    head, salt, sealed = req["key"].rsplit("$", 2)
    prefix = head + "$"
    params = dict(kv.split("=") for kv in head.split("$")[2].split(","))
    k = AESGCM(kek(req["passphrase"], base64.b64decode(salt), int(params["m"]),
                   int(params["t"]), int(params["p"])))
    out = {}
    for name, text in (("cek", sealed), ("iv", req["iv"])):
        raw = base64.b64decode(text)
        which = "key" if name == "cek" else "iv"
        out[name] = k.decrypt(raw[:12], raw[12:], aad(which, prefix)).hex()
    return out


def wrap(req):
    m, t, p = req["m"], req["t"], req["p"]
    prefix = f"argon2id$v=19$m={m},t={t},p={p}$"
    salt = os.urandom(16)
    k = AESGCM(kek(req["passphrase"], salt, m, t, p))
    def seal(value, which):
        n = os.urandom(12)
        return base64.b64encode(n + k.encrypt(n, bytes.fromhex(value), aad(which, prefix))).decode()
    return {"key": prefix + base64.b64encode(salt).decode() + "$" + seal(req["cek"], "key"),
            "iv": seal(req["iv"], "iv")}


req = json.load(sys.stdin)
json.dump(unwrap(req) if req["op"] == "unwrap" else wrap(req), sys.stdout)
