//! `ls [-r] s3://BUCKET/PREFIX`: objects with their plaintext sizes and the key each needs.

use std::io::Write as _;

use cryptobucket::{ListEntry, Result};
use futures::TryStreamExt as _;

use super::Global;
use super::transfer::parse_s3_prefix;

/// `YYYY-MM-DD HH:MM:SS` (UTC), or blanks.
fn when(t: Option<std::time::SystemTime>) -> String {
    match t {
        Some(t) => {
            let t = time::OffsetDateTime::from(t);
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        }
        None => " ".repeat(19),
    }
}

pub(crate) async fn ls(g: &Global, target: &str, recursive: bool) -> Result<()> {
    let (bucket, prefix) = parse_s3_prefix(target)?;
    let cb = g.bucket_keys_optional(bucket).await?;
    let keys_given = g.keyring_path().is_some() || g.has_rsa_keys();
    let mut entries = std::pin::pin!(
        cb.list()
            .prefix(&prefix)
            .recursive(recursive)
            .envelopes(true)
            .into_stream()
    );
    let mut out = std::io::stdout().lock();
    let (mut objects, mut bytes) = (0u64, 0u64);
    while let Some(entry) = entries.try_next().await? {
        let line = match entry {
            ListEntry::Prefix(p) => format!("{:>19} {:>14} {p}", "", "PRE"),
            ListEntry::Object(o) => {
                let o = *o;
                objects += 1;
                bytes += o.size;
                let needs = match o.envelope.flatten() {
                    None => "plain (not encrypted)".to_owned(),
                    Some(env) => {
                        let mut s = format!("{} matdesc={}", env.wrap_alg, env.matdesc);
                        if o.has_integrity == Some(false) {
                            s.push_str(" no-integrity");
                        }
                        if keys_given {
                            match cb.keyring().candidates(&env) {
                                Ok(c) => {
                                    s.push_str(&format!(" key={:?}", c[0].provider().describe()))
                                }
                                Err(_) => s.push_str(" key=none-in-keyring"),
                            }
                        }
                        s
                    }
                };
                format!(
                    "{} {:>14} {}\t{needs}",
                    when(o.last_modified),
                    o.size,
                    o.key
                )
            }
            _ => continue,
        };
        if writeln!(out, "{line}").is_err() {
            return Ok(()); // stdout closed (`| head`): stop quietly
        }
    }
    eprintln!("{objects} objects, {bytes} bytes (plaintext)");
    Ok(())
}
