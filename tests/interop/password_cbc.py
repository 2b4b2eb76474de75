#!/usr/bin/env python3
"""Encrypts a file exactly as seed 004's model-encryption script does (pycryptodome):
key = SHA-256(password), file = IV ‖ AES-256-CBC(key, IV, PKCS#7(plaintext)).

    password_cbc.py PLAIN OUT PASSWORD IV_HEX
"""
import hashlib
import sys

from Crypto.Cipher import AES
from Crypto.Util.Padding import pad

plain_path, out_path, password, iv_hex = sys.argv[1:5]
key = hashlib.sha256(password.encode()).digest()
iv = bytes.fromhex(iv_hex)
with open(plain_path, "rb") as f:
    data = f.read()
with open(out_path, "wb") as f:
    f.write(iv + AES.new(key, AES.MODE_CBC, iv).encrypt(pad(data, AES.block_size)))
