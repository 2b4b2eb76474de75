//! Minimal PEM (RFC 7468) reading and writing for key files.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Decodes the first PEM block of `text`: its label and DER bytes (zeroized on drop).
pub(crate) fn decode(text: &str) -> Result<(String, Zeroizing<Vec<u8>>)> {
    let mut lines = text.lines().map(str::trim);
    let label = loop {
        let Some(line) = lines.next() else {
            return Err(Error::invalid_key(
                "no PEM block found (expected -----BEGIN ...-----)",
            ));
        };
        if let Some(rest) = line.strip_prefix("-----BEGIN ") {
            break rest.trim_end_matches('-').to_owned();
        }
    };
    if label == "ENCRYPTED PRIVATE KEY" {
        return Err(Error::invalid_key(
            "passphrase-protected private keys are not supported; decrypt the PEM first",
        ));
    }
    let end = format!("-----END {label}-----");
    let mut body = Zeroizing::new(String::new());
    loop {
        let Some(line) = lines.next() else {
            return Err(Error::invalid_key(format!(
                "PEM block {label} has no END line"
            )));
        };
        if line == end {
            break;
        }
        if line.contains(':') {
            return Err(Error::invalid_key(
                "encrypted (Proc-Type) PEM keys are not supported; decrypt the PEM first",
            ));
        }
        body.push_str(line);
    }
    let der = B64
        .decode(body.as_bytes())
        .map_err(|_| Error::invalid_key(format!("PEM block {label} is not valid base64")))?;
    Ok((label, Zeroizing::new(der)))
}

/// Encodes DER bytes as a PEM block with 64-character lines.
pub(crate) fn encode(label: &str, der: &[u8]) -> Zeroizing<String> {
    let b64 = Zeroizing::new(B64.encode(der));
    let mut out = Zeroizing::new(format!("-----BEGIN {label}-----\n"));
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let pem = encode("PUBLIC KEY", &[1, 2, 3, 250]);
        let (label, der) = decode(&pem).unwrap();
        assert_eq!(label, "PUBLIC KEY");
        assert_eq!(der.as_slice(), &[1, 2, 3, 250]);
        assert!(decode("nothing").is_err());
        assert!(decode("-----BEGIN X-----\nAAAA\n").is_err());
        assert!(decode("-----BEGIN X-----\n!!!\n-----END X-----").is_err());
        assert!(decode("-----BEGIN ENCRYPTED PRIVATE KEY-----\n").is_err());
    }
}
