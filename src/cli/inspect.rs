//! `inspect`: an object's encryption metadata and integrity state (no secrets), as text lines
//! or one JSON object.

use cryptobucket::integrity::{IntegrityRecord, LengthMode, sidecar_key};
use cryptobucket::{Envelope, Error, Result};
use serde_json::{Value, json};

use super::{Global, parse_s3_url};

/// What inspect reports, gathered once and rendered as text or JSON.
fn facts(
    object: &str,
    key: &str,
    size: u64,
    meta: &std::collections::HashMap<String, String>,
    keyring: Option<&cryptobucket::Keyring>,
) -> Result<Value> {
    let mut f = json!({ "object": object, "size": size });
    let Some(env) = Envelope::from_metadata(meta)? else {
        f["encrypted"] = json!(false);
        return Ok(f);
    };
    let len = |v: &cryptobucket::envelope::WrappedValue| v.decode("").map(|b| b.len()).unwrap_or(0);
    f["encrypted"] = json!(true);
    f["format"] = json!(format!("{:?}", env.version));
    f["content_algorithm"] = json!(cryptobucket::envelope::CEK_ALG_AES_CTR);
    f["wrap_algorithm"] = json!(env.wrap_alg.as_str());
    f["matdesc"] = serde_json::from_str(&env.matdesc.to_json()).unwrap_or(Value::Null);
    f["wrapped_key_bytes"] = json!(len(&env.wrapped_key));
    f["wrapped_iv_bytes"] = json!(len(&env.wrapped_iv));
    f["unencrypted_content_length"] = json!(env.unencrypted_content_length);
    if let (Some(d), Some(p)) = (env.data_size, env.part_size) {
        f["multipart"] = json!({ "data_size": d, "part_size": p });
    }
    f["stores_plaintext_md5"] = json!(env.unencrypted_content_md5.is_some());
    if let Some(k) = keyring {
        f["keyring_key"] = match k.candidates(&env) {
            Ok(c) => json!(c[0].provider().describe()),
            Err(e) => json!({ "none": e.to_string() }),
        };
    }
    f["integrity"] = match IntegrityRecord::from_metadata(meta) {
        Ok(None) => Value::Null,
        Err(e) => json!({ "malformed": e.to_string() }),
        Ok(Some(r)) => json!({
            "version": 1,
            "object_id": r.object_id_text(),
            "chunks": r.chunk_count(size),
            "chunk_size": r.chunk_size,
            "length": if r.length_mode == LengthMode::Bound { "bound" } else { "unbound (stream)" },
            "tags": if r.inline_tags.is_some() {
                "in the metadata".to_owned()
            } else {
                format!("in {}", sidecar_key(key))
            },
            "signature": r.signature.as_ref().map(|s| json!({
                "signer": s.signer.to_string(),
                "trusted": keyring.is_some_and(|k| k.integrity().trusted_signers().contains(&s.signer)),
            })),
        }),
    };
    Ok(f)
}

/// The text form, one `name: value` line each.
fn text(f: &Value) -> Vec<String> {
    let s = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string())
    };
    let mut out = vec![
        format!("object: {}", s(&f["object"])),
        format!("size: {} bytes", f["size"]),
    ];
    if f["encrypted"] == json!(false) {
        out.push("encrypted: no (no client-side-encryption metadata)".into());
        return out;
    }
    out.push(format!("encrypted: yes (format {})", s(&f["format"])));
    out.push(format!("content algorithm: {}", s(&f["content_algorithm"])));
    out.push(format!("wrap algorithm: {}", s(&f["wrap_algorithm"])));
    out.push(format!("matdesc: {}", f["matdesc"]));
    out.push(format!(
        "wrapped key: {} bytes; wrapped iv: {} bytes",
        f["wrapped_key_bytes"], f["wrapped_iv_bytes"]
    ));
    out.push(match &f["unencrypted_content_length"] {
        Value::Null => "unencrypted content length: (not recorded)".into(),
        n => format!("unencrypted content length: {n}"),
    });
    if let Some(m) = f.get("multipart") {
        out.push(format!(
            "multipart: data size {}, part size {}",
            m["data_size"], m["part_size"]
        ));
    }
    if f["stores_plaintext_md5"] == json!(true) {
        out.push("note: the object stores a plaintext MD5 (leaks content equality)".into());
    }
    match f.get("keyring_key") {
        Some(Value::String(k)) => out.push(format!("keyring key: {k}")),
        Some(v) => out.push(format!("keyring key: none ({})", s(&v["none"]))),
        None => {}
    }
    let i = &f["integrity"];
    if i.is_null() {
        out.push(
            "integrity: none (written by another SDK or with integrity off: reads cannot be \
             verified, strict mode refuses it)"
                .into(),
        );
    } else if let Some(e) = i.get("malformed") {
        out.push(format!("integrity: malformed ({})", s(e)));
    } else {
        out.push(format!(
            "integrity: v1, object id {}, {} chunks of {} bytes, length {}, tags {}",
            s(&i["object_id"]),
            i["chunks"],
            i["chunk_size"],
            s(&i["length"]),
            s(&i["tags"])
        ));
        out.push(match &i["signature"] {
            Value::Null => "signature: none".into(),
            sig => format!(
                "signature: by {} ({})",
                s(&sig["signer"]),
                if sig["trusted"] == json!(true) {
                    "trusted by this keyring"
                } else {
                    "not trusted by this keyring"
                }
            ),
        });
        out.push(format!(
            "(verify checks the tags: cryptobucket verify {})",
            s(&f["object"])
        ));
    }
    out
}

pub(crate) async fn inspect(g: &Global, object: &str, as_json: bool) -> Result<()> {
    let (bucket, key) = parse_s3_url(object)?;
    // Keys are optional here: with them, inspect also says which key would unwrap the object.
    let keyring = g.keyring(false).ok();
    let client = g.client().await;
    let resp = client
        .head_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .map_err(|e| Error::from_sdk("HeadObject", e).with_object(&bucket, &key))?;
    let empty = Default::default();
    let meta = resp.metadata().unwrap_or(&empty);
    let size = resp
        .content_length()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0);
    let f = facts(object, &key, size, meta, keyring.as_ref())?;
    if as_json {
        println!("{f}");
    } else {
        for line in text(&f) {
            println!("{line}");
        }
    }
    Ok(())
}
