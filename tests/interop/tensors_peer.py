#!/usr/bin/env python3
"""The peers of tests/tensors.rs: the `safetensors` package makes and loads the files, numpy
gives each tensor's bytes, and `cryptography` makes veTurboIO files from the layout in
../shared/spec/seed-formats.md §2 (AES-128-CTR from offset 262,144 behind the JSON header, or
headerless with veTurboIO's environment key). No veTurboIO peer can run here.

One JSON request on stdin, one JSON answer on stdout:
  {"op": "make", "dir": D, "big": N, ["header_key": b64, "meta_data_key": blob]}
                                     -> writes D/model.safetensors, D/model.vt-header,
                                        D/model.vt-env; answers the tensors (dtype, shape,
                                        sha256 of numpy's bytes), keys and header fields
  {"op": "load", "path": P}          -> what safetensors loads from P: tensors and metadata
"""
import base64
import hashlib
import json
import os
import sys

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from safetensors import safe_open
from safetensors.numpy import save_file

MAGIC = b"Byte3ncryptM0del"
HEADER_LEN = 262144
DTYPES = {
    np.dtype("uint8"): "U8", np.dtype("int8"): "I8", np.dtype("bool"): "BOOL",
    np.dtype("float16"): "F16", np.dtype("float32"): "F32", np.dtype("float64"): "F64",
    np.dtype("int16"): "I16", np.dtype("int32"): "I32", np.dtype("int64"): "I64",
}


def describe(tensors):
    return {
        name: {
            "dtype": DTYPES[a.dtype],
            "shape": list(a.shape),
            "sha256": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest(),
            "len": a.nbytes,
        }
        for name, a in tensors.items()
    }


def ctr(key, iv, data):
    enc = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def make(d, big, header_key=None, meta_data_key=None):
    rng = np.random.default_rng(7)
    # Odd sizes first, so most tensors start at offsets that are not multiples of 16 (or 4).
    tensors = {
        "embed.tokens": rng.integers(0, 255, size=(3,), dtype=np.uint8),
        "layers.0.attn.q": rng.standard_normal((5, 7), dtype=np.float32),
        "layers.0.attn.k": rng.standard_normal((3, 3)).astype(np.float16),
        "layers.0.mlp.up": rng.integers(-9, 9, size=(11, 13), dtype=np.int64),
        "layers.0.norm": rng.integers(0, 2, size=(9,)).astype(bool),
        "layers.1.attn.q": rng.standard_normal((7, 5), dtype=np.float64),
        "layers.1.mlp.up": rng.integers(-100, 100, size=(17,), dtype=np.int8),
        "layers.1.big": rng.standard_normal((big,), dtype=np.float32),
        "head.bias": rng.integers(-5, 5, size=(33,), dtype=np.int16),
        "head.scale": rng.integers(-5, 5, size=(0, 4), dtype=np.int32),
    }
    path = os.path.join(d, "model.safetensors")
    save_file(tensors, path, metadata={"format": "np", "source": "tensors_peer"})
    plain = open(path, "rb").read()

    # Headered veTurboIO file: CTR-128, key from KMS (meta_data_key is the KMS blob).
    key = base64.b64decode(header_key) if header_key else os.urandom(16)
    iv = os.urandom(16)
    header = {
        "mode": "CTR-128",
        "iv": base64.b64encode(iv).decode(),
        "meta_data_key": meta_data_key or "kms-ciphertext-blob-of-the-data-key",
        "file_timestamp": 1732406400,
    }
    h = MAGIC + json.dumps(header).encode()
    h += b"\0" * (HEADER_LEN - len(h))
    open(os.path.join(d, "model.vt-header"), "wb").write(h + ctr(key, iv, plain))

    # Headerless veTurboIO file with veTurboIO's own test key and IV.
    env_key, env_iv = b"abcdefgh12345678", b"1234567887654321"
    open(os.path.join(d, "model.vt-env"), "wb").write(ctr(env_key, env_iv, plain))
    return {
        "tensors": describe(tensors),
        "metadata": {"format": "np", "source": "tensors_peer"},
        "size": len(plain),
        "sha256": hashlib.sha256(plain).hexdigest(),
        "header_key": base64.b64encode(key).decode(),
        "header_iv": base64.b64encode(iv).decode(),
        "header": header,
        "env_key": base64.b64encode(env_key).decode(),
        "env_iv": base64.b64encode(env_iv).decode(),
    }


def load(path):
    tensors = {}
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata()
        for name in f.keys():
            tensors[name] = f.get_tensor(name)
    return {"tensors": describe(tensors), "metadata": meta}


req = json.load(sys.stdin)
if req["op"] == "make":
    ans = make(req["dir"], req.get("big", 1000), req.get("header_key"), req.get("meta_data_key"))
else:
    ans = load(req["path"])
json.dump(ans, sys.stdout)
