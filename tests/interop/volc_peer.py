#!/usr/bin/env python3
"""The official Volcengine request signer (PyPI `volcengine`, `volcengine.auth.SignerV4`), the
peer of our signer in tests/volcengine_kms.rs.

Reads {"cases": [{method, host, path, query: {k: v}, content_type, body, ak, sk, token,
region, service, date: "YYYYMMDDTHHMMSSZ"}]} on stdin; writes {"signed": [{"authorization",
"x_content_sha256", "x_date"}]}.
"""
import datetime
import json
import sys
from collections import OrderedDict

from volcengine.Credentials import Credentials
from volcengine.auth.SignParam import SignParam
from volcengine.auth.SignerV4 import SignerV4

out = []
for c in json.load(sys.stdin)["cases"]:
    p = SignParam()
    p.set_method(c["method"])
    p.set_host(c["host"])
    p.set_path(c["path"])
    p.set_query(OrderedDict(c["query"]))
    p.set_body(c["body"].encode())
    p.set_header_list(OrderedDict([("Content-Type", c["content_type"]), ("Host", c["host"])]))
    p.set_date(datetime.datetime.strptime(c["date"], "%Y%m%dT%H%M%SZ"))
    creds = Credentials(c["ak"], c["sk"], c["service"], c["region"], c.get("token") or "")
    r = SignerV4.sign_only(p, creds)
    out.append(
        {"authorization": r.authorization, "x_content_sha256": r.xContextSha256, "x_date": r.xdate}
    )
json.dump({"signed": out}, sys.stdout)
