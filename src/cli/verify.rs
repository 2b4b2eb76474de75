//! `cryptobucket verify s3://BUCKET/PREFIX`: read and check every object, write nothing.

use futures::StreamExt as _;

use super::Global;
use super::transfer::{list_keys, parse_s3_prefix};
use cryptobucket::{CryptoBucket, Error, IntegrityState, Result};

/// How one object fared.
enum Outcome {
    Verified(IntegrityState),
    /// Not encrypted, read as it is (`--allow-unencrypted`): nothing to verify.
    Plain,
    Failed(Error),
}

/// Reads the whole object through the verifying path and drops the plaintext.
async fn check(cb: &CryptoBucket, key: &str) -> Outcome {
    let out = match cb.get_object().key(key).send().await {
        Ok(out) => out,
        Err(e) => return Outcome::Failed(e),
    };
    let (state, plain) = (out.integrity, out.envelope.is_none());
    let mut body = out.body;
    while let Some(chunk) = body.next().await {
        if let Err(e) = chunk {
            return Outcome::Failed(e);
        }
    }
    match plain {
        true => Outcome::Plain,
        false => Outcome::Verified(state),
    }
}

pub(crate) async fn verify(g: &Global, target: &str) -> Result<()> {
    let (bucket, prefix) = parse_s3_prefix(target)?;
    let cb = g.bucket(g.client().await, bucket, g.keyring(false)?)?;
    let keys = list_keys(&cb, &prefix).await?;
    let (mut ok, mut absent, mut plain, mut failed) = (0usize, 0usize, 0usize, 0usize);
    let mut first_failure = None;
    let mut results = futures::stream::iter(keys.iter())
        .map(|key| {
            let cb = cb.clone();
            async move { (key, check(&cb, key).await) }
        })
        .buffered(4);
    while let Some((key, outcome)) = results.next().await {
        match outcome {
            Outcome::Verified(IntegrityState::Absent) => {
                absent += 1;
                println!("NO INTEGRITY  {key}  (decrypts, but cannot be verified)");
            }
            Outcome::Plain => {
                plain += 1;
                println!("NOT ENCRYPTED {key}  (read as it is, nothing to verify)");
            }
            Outcome::Verified(IntegrityState::Signed(k)) => {
                ok += 1;
                println!("ok            {key}  (signed by {k})");
            }
            Outcome::Verified(_) => {
                ok += 1;
                println!("ok            {key}");
            }
            Outcome::Failed(e) => {
                failed += 1;
                println!("FAILED        {key}  {}: {}", e.kind(), e.message());
                first_failure.get_or_insert(e.kind());
            }
        }
    }
    let plain = match plain {
        0 => String::new(),
        n => format!(", {n} not encrypted"),
    };
    eprintln!(
        "checked {} objects under {target}: {ok} verified, {absent} without integrity data{plain}, \
         {failed} failed",
        keys.len()
    );
    match first_failure {
        Some(kind) => Err(Error::new(
            kind,
            format!("{failed} of {} objects failed verification", keys.len()),
        )),
        None => Ok(()),
    }
}
