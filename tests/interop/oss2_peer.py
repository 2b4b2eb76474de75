"""The reference peer for interop tests: the real oss2 (2.19.1) crypto classes, with boto3
moving bytes and metadata over the S3 API (oss2's CryptoBucket speaks only the OSS protocol).

Usage: oss2_peer.py JOBS.json   (endpoint, credentials, bucket and a list of jobs)

Job ops:
  encrypt  {key, in, matdesc?, oaep?, multipart_part_size?}  oss2 encrypts `in`, boto3 uploads
  decrypt  {key, out, range?, oaep?}                         boto3 downloads, oss2 decrypts to `out`
  sign     {params, secret, timestamp, nonce}                aliyun-python-sdk-core signs an RPC
                                                             request (fixed time and nonce)
Jobs with `kms: {host, port, ak, secret, region, key_id}` (and `passphrase`?) use oss2's
AliKMSProvider, its KMS calls sent to that (local) endpoint.
Prints one JSON line per job with what oss2 saw (matdesc, wrap alg).
"""
import json
import os
import sys

import boto3
from botocore.config import Config
import oss2
from oss2 import models, utils
from oss2.crypto import AliKMSProvider, LocalRsaProvider, RsaProvider
from aliyunsdkcore import client as acs_client
from aliyunsdkcore.auth.composer import rpc_signature_composer
from aliyunsdkcore.utils import parameter_helper

PREFIX = "x-oss-meta-"


def s3_client(cfg):
    return boto3.client(
        "s3",
        endpoint_url=cfg["endpoint"],
        aws_access_key_id=cfg["access_key"],
        aws_secret_access_key=cfg["secret_key"],
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def provider(cfg, job):
    if job.get("kms"):
        k = job["kms"]
        p = AliKMSProvider(k["ak"], k["secret"], k["region"], k["key_id"],
                           passphrase=job.get("passphrase"), mat_desc=job.get("matdesc") or None)
        # The same AcsClient oss2 builds, pointed at the local KMS (plain HTTP, its port).
        p.kms_client = acs_client.AcsClient(k["ak"], k["secret"], k["region"], port=k["port"])
        p.kms_client.add_endpoint(k["region"], "Kms", k["host"])
        return p
    if job.get("oaep"):
        # LocalRsaProvider reads DIR/KEY.private_key.pem and DIR/KEY.public_key.pem.
        return LocalRsaProvider(dir=cfg["oaep_dir"], key="k")
    # A job may name its own key pair (e.g. the new key after a rewrap).
    with open(job.get("public_key", cfg["public_key"])) as f:
        pub = f.read()
    with open(job.get("private_key", cfg["private_key"])) as f:
        priv = f.read()
    return RsaProvider(key_pair={"public_key": pub, "private_key": priv}, mat_desc=job.get("matdesc") or None)


def encrypt(s3, cfg, job):
    p = provider(cfg, job)
    with open(job["in"], "rb") as f:
        data = f.read()
    material = p.create_content_material()
    part_size = job.get("multipart_part_size")
    if part_size:
        ctx = models.MultipartUploadCryptoContext(len(data), part_size)
        headers = material.to_object_meta({}, ctx)
        meta = {k[len(PREFIX):]: v for k, v in headers.items() if k.lower().startswith(PREFIX)}
        up = s3.create_multipart_upload(Bucket=cfg["bucket"], Key=job["key"], Metadata=meta)
        parts = []
        for n, off in enumerate(range(0, len(data), part_size), start=1):
            # Each part encrypted at its own offset, as oss2's CryptoBucket.upload_part does.
            cipher = utils.AESCTRCipher()
            cipher.initialize(p.decrypt_encrypted_key(material.encrypted_key),
                              p.decrypt_encrypted_iv(material.encrypted_iv), off // 16)
            ct = cipher.encrypt(data[off:off + part_size])
            r = s3.upload_part(Bucket=cfg["bucket"], Key=job["key"], UploadId=up["UploadId"], PartNumber=n, Body=ct)
            parts.append({"PartNumber": n, "ETag": r["ETag"]})
        s3.complete_multipart_upload(Bucket=cfg["bucket"], Key=job["key"], UploadId=up["UploadId"],
                                     MultipartUpload={"Parts": parts})
    else:
        headers = material.to_object_meta({"content-length": str(len(data))})
        meta = {k[len(PREFIX):]: v for k, v in headers.items() if k.lower().startswith(PREFIX)}
        ct = material.cipher.encrypt(data)
        s3.put_object(Bucket=cfg["bucket"], Key=job["key"], Body=ct, Metadata=meta)
    return {"wrap_alg": material.wrap_alg}


def decrypt(s3, cfg, job):
    p = provider(cfg, job)
    rng = job.get("range")
    start = 0
    args = {"Bucket": cfg["bucket"], "Key": job["key"]}
    if rng is not None:
        first, last = rng
        start = (first // 16) * 16  # oss2's adjust_range
        args["Range"] = "bytes=%d-%d" % (start, last)
    resp = s3.get_object(**args)
    headers = {PREFIX + k: v for k, v in resp["Metadata"].items()}
    material = models.ContentCryptoMaterial(p.cipher, p.wrap_alg)
    material.from_object_meta(headers)  # oss2's own parsing and algorithm checks
    key = p.decrypt_encrypted_key(material.encrypted_key)
    iv = p.decrypt_encrypted_iv(material.encrypted_iv)
    if len(key) != 32 or len(iv) != 16:
        raise SystemExit("oss2 unwrapped a key/iv of the wrong size")
    cipher = utils.AESCTRCipher()
    cipher.initialize(key, iv, start // 16)
    plain = cipher.decrypt(resp["Body"].read())
    if rng is not None:
        plain = plain[rng[0] - start:]
    with open(job["out"], "wb") as f:
        f.write(plain)
    return {"wrap_alg": material.wrap_alg, "matdesc": material.mat_desc or {},
            "data_size": headers.get(PREFIX + "client-side-encryption-data-size"),
            "part_size": headers.get(PREFIX + "client-side-encryption-part-size")}


def sign(s3, cfg, job):
    # aliyun-python-sdk-core's own RPC signer, with its clock and nonce fixed.
    parameter_helper.get_iso_8061_date = lambda: job["timestamp"]
    parameter_helper.get_uuid = lambda: job["nonce"]
    url, string_to_sign = rpc_signature_composer.get_signed_url(
        dict(job["params"]), job["ak"], job["secret"], "JSON", "POST", {})
    return {"url": url, "string_to_sign": string_to_sign}


def main():
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    assert oss2.__version__ == "2.19.1", oss2.__version__
    s3 = s3_client(cfg)
    for job in cfg["jobs"]:
        out = {"encrypt": encrypt, "decrypt": decrypt, "sign": sign}[job["op"]](s3, cfg, job)
        out["key"] = job.get("key")
        print(json.dumps(out))


if __name__ == "__main__":
    main()
