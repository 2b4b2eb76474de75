//! A local stand-in for Volcengine KMS, which cannot run here: `Encrypt` and `Decrypt` of API
//! version 2021-02-18 (`POST /?Action=..&Version=..&KeyringName=..&KeyName=..`, JSON bodies,
//! `{"ResponseMetadata": {...}, "Result": {...}}` answers and errors), checking every request's
//! HMAC-SHA256 signature with its own code (the headers it lists, the body hash, the
//! credential scope, the date's skew, the STS token when configured). Blobs are base64(key
//! reference ‖ nonce ‖ AES-256-GCM(plaintext, AAD = the encryption context string)), so a
//! wrong context or key fails as on the real service.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::hmac;
use base64::Engine as _;
use http_body_util::BodyExt as _;

use crate::local_http::{LocalServer, Resp, encode, json_answer, parse_pairs};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Default)]
struct State {
    /// `keyring/key` -> master key.
    keys: HashMap<String, [u8; 32]>,
    calls: HashMap<String, usize>,
}

struct Config {
    access_key: String,
    secret: String,
    session_token: Option<String>,
    region: String,
}

/// A running fake Volcengine KMS; stopped on drop.
pub struct FakeVolcKms {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    _server: LocalServer,
}

impl FakeVolcKms {
    /// Accepts requests for `region` signed with this AccessKey (and, if given, carrying this
    /// session token).
    pub fn start(
        access_key: &str,
        secret: &str,
        session_token: Option<&str>,
        region: &str,
    ) -> Self {
        let config = Arc::new(Config {
            access_key: access_key.to_owned(),
            secret: secret.to_owned(),
            session_token: session_token.map(str::to_owned),
            region: region.to_owned(),
        });
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let server = LocalServer::start(move |req| {
            let (st, config) = (st.clone(), config.clone());
            async move { handle(req, &st, &config).await }
        });
        Self {
            endpoint: server.endpoint.clone(),
            state,
            _server: server,
        }
    }

    /// Creates the key `key` in keyring `keyring`.
    pub fn create_key(&self, keyring: &str, key: &str) {
        let mut master = [0u8; 32];
        aws_lc_rs::rand::fill(&mut master).unwrap();
        self.state
            .lock()
            .unwrap()
            .keys
            .insert(format!("{keyring}/{key}"), master);
    }

    /// How many times `action` was called (successfully or not).
    pub fn calls(&self, action: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .calls
            .get(action)
            .copied()
            .unwrap_or(0)
    }
}

fn error(status: u16, code: &str, message: &str) -> Resp {
    json_answer(
        status,
        serde_json::json!({"ResponseMetadata": {
            "RequestId": "fake-volc-request",
            "Service": "kms",
            "Error": {"Code": code, "Message": message},
        }}),
    )
}

fn ok(result: serde_json::Value) -> Resp {
    json_answer(
        200,
        serde_json::json!({
            "ResponseMetadata": {"RequestId": "fake-volc-request", "Service": "kms"},
            "Result": result,
        }),
    )
}

fn hmac_sha256(key: &[u8], data: &str) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
        .as_ref()
        .to_vec()
}

/// The signature the request should carry, computed from what arrived.
#[allow(clippy::too_many_arguments)]
fn expected_signature(
    method: &str,
    raw_path: &str,
    query: &BTreeMap<String, String>,
    headers: &[(String, String)],
    body_hash: &str,
    x_date: &str,
    scope: &str,
    secret: &str,
) -> String {
    let canonical_query: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let canonical = [
        method,
        raw_path,
        &canonical_query.join("&"),
        &canonical_headers,
        &names.join(";"),
        body_hash,
    ]
    .join("\n");
    let to_sign = format!(
        "HMAC-SHA256\n{x_date}\n{scope}\n{}",
        hex::encode(digest(&SHA256, canonical.as_bytes()))
    );
    let mut parts = scope.split('/');
    let (date, region, service) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let k = hmac_sha256(secret.as_bytes(), date);
    let k = hmac_sha256(&k, region);
    let k = hmac_sha256(&k, service);
    let k = hmac_sha256(&k, "request");
    hex::encode(hmac_sha256(&k, &to_sign))
}

async fn handle(
    req: hyper::Request<hyper::body::Incoming>,
    st: &Mutex<State>,
    config: &Config,
) -> Resp {
    let method = req.method().as_str().to_owned();
    let raw_path = req.uri().path().to_owned();
    let mut query = BTreeMap::new();
    if let Some(q) = req.uri().query() {
        parse_pairs(q, &mut query);
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let authorization = header("authorization").unwrap_or_default();
    let x_date = header("x-date").unwrap_or_default();
    let claimed_hash = header("x-content-sha256");
    let token = header("x-security-token");
    let mut all_headers: HashMap<String, String> = HashMap::new();
    for (k, v) in req.headers() {
        if let Ok(v) = v.to_str() {
            all_headers.insert(k.as_str().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(400, "InvalidRequest", "cannot read body"),
    };
    let action = query.get("Action").cloned().unwrap_or_default();
    *st.lock().unwrap().calls.entry(action.clone()).or_default() += 1;

    // Authentication, as the service does it.
    let body_hash = hex::encode(digest(&SHA256, &body));
    if claimed_hash.as_deref() != Some(body_hash.as_str()) {
        return error(
            400,
            "InvalidContentSha256",
            "X-Content-Sha256 does not match the body",
        );
    }
    let Some(rest) = authorization.strip_prefix("HMAC-SHA256 ") else {
        return error(
            401,
            "InvalidAuthorization",
            "missing or malformed Authorization",
        );
    };
    let mut fields = HashMap::new();
    for part in rest.split(", ") {
        if let Some((k, v)) = part.split_once('=') {
            fields.insert(k.to_owned(), v.to_owned());
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (
        fields.get("Credential"),
        fields.get("SignedHeaders"),
        fields.get("Signature"),
    ) else {
        return error(401, "InvalidAuthorization", "incomplete Authorization");
    };
    let Some((ak, scope)) = credential.split_once('/') else {
        return error(401, "InvalidAuthorization", "malformed Credential");
    };
    if ak != config.access_key {
        return error(401, "InvalidAccessKey", "unknown AccessKey");
    }
    if scope
        != format!(
            "{}/{}/kms/request",
            &x_date[..x_date.len().min(8)],
            config.region
        )
    {
        return error(
            401,
            "InvalidCredential",
            "wrong date, region or service in the scope",
        );
    }
    let names: Vec<&str> = signed.split(';').collect();
    for required in ["content-type", "host", "x-content-sha256", "x-date"] {
        if !names.contains(&required) {
            return error(
                401,
                "SignatureDoesNotMatch",
                &format!("{required} is not signed"),
            );
        }
    }
    if token.is_some() && !names.contains(&"x-security-token") {
        return error(
            401,
            "SignatureDoesNotMatch",
            "x-security-token is not signed",
        );
    }
    let mut headers = Vec::new();
    for n in &names {
        match all_headers.get(*n) {
            Some(v) => headers.push(((*n).to_owned(), v.clone())),
            None => {
                return error(
                    401,
                    "SignatureDoesNotMatch",
                    &format!("{n} is signed but absent"),
                );
            }
        }
    }
    let want = expected_signature(
        &method,
        &raw_path,
        &query,
        &headers,
        &body_hash,
        &x_date,
        scope,
        &config.secret,
    );
    if *signature != want {
        return error(
            401,
            "SignatureDoesNotMatch",
            "the request signature does not match",
        );
    }
    if config.session_token != token {
        return error(
            401,
            "InvalidSecurityToken",
            "wrong or missing X-Security-Token",
        );
    }
    let now = time_of(&x_date);
    let skew = match now {
        Some(t) => (t - unix_now()).abs(),
        None => i64::MAX,
    };
    if skew > 900 {
        return error(
            401,
            "RequestExpired",
            "X-Date missing or off by more than 15 minutes",
        );
    }
    if query.get("Version").map(String::as_str) != Some("2021-02-18") {
        return error(400, "InvalidVersion", "unsupported API version");
    }
    let json: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return error(400, "InvalidParameter", "the body is not JSON"),
    };
    let aad = match json.get("EncryptionContext") {
        None => Vec::new(),
        Some(serde_json::Value::String(text)) => {
            match serde_json::from_str::<BTreeMap<String, String>>(text) {
                Ok(map) => serde_json::to_vec(&map).unwrap(),
                Err(_) => {
                    return error(
                        400,
                        "InvalidParameter",
                        "EncryptionContext is not a JSON object string",
                    );
                }
            }
        }
        Some(_) => {
            return error(
                400,
                "InvalidParameter",
                "EncryptionContext must be a string",
            );
        }
    };
    let key_ref = format!(
        "{}/{}",
        query.get("KeyringName").map(String::as_str).unwrap_or(""),
        query.get("KeyName").map(String::as_str).unwrap_or("")
    );
    match action.as_str() {
        "Encrypt" => {
            let Some(master) = st.lock().unwrap().keys.get(&key_ref).copied() else {
                return error(404, "KeyNotFound", "the specified key does not exist");
            };
            let Some(plain) = json
                .get("Plaintext")
                .and_then(|p| p.as_str())
                .and_then(|p| B64.decode(p).ok())
                .filter(|p| (1..=4096).contains(&p.len()))
            else {
                return error(
                    400,
                    "InvalidParameter",
                    "Plaintext must be base64 of 1 to 4096 bytes",
                );
            };
            let mut nonce = [0u8; 12];
            aws_lc_rs::rand::fill(&mut nonce).unwrap();
            let mut sealed = plain;
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &master).unwrap())
                .seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&aad[..]),
                    &mut sealed,
                )
                .unwrap();
            let mut blob = vec![key_ref.len() as u8];
            blob.extend_from_slice(key_ref.as_bytes());
            blob.extend_from_slice(&nonce);
            blob.extend_from_slice(&sealed);
            ok(serde_json::json!({"CiphertextBlob": B64.encode(blob)}))
        }
        "Decrypt" => {
            let bad = || {
                error(
                    400,
                    "InvalidCiphertextBlob",
                    "the ciphertext cannot be decrypted",
                )
            };
            let Some(blob) = json
                .get("CiphertextBlob")
                .and_then(|b| b.as_str())
                .and_then(|b| B64.decode(b).ok())
            else {
                return bad();
            };
            let Some((&n, rest)) = blob.split_first() else {
                return bad();
            };
            if rest.len() < usize::from(n) + 12 + 16 {
                return bad();
            }
            let (blob_ref, rest) = rest.split_at(usize::from(n));
            let blob_ref = String::from_utf8_lossy(blob_ref).into_owned();
            // A request that names a key must name the blob's.
            if key_ref != "/" && key_ref != blob_ref {
                return bad();
            }
            let Some(master) = st.lock().unwrap().keys.get(&blob_ref).copied() else {
                return bad();
            };
            let (nonce, sealed) = rest.split_at(12);
            let mut buf = sealed.to_vec();
            match LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &master).unwrap()).open_in_place(
                Nonce::try_assume_unique_for_key(nonce).unwrap(),
                Aad::from(&aad[..]),
                &mut buf,
            ) {
                Ok(plain) => ok(serde_json::json!({"Plaintext": B64.encode(plain)})),
                Err(_) => bad(),
            }
        }
        other => error(400, "InvalidAction", &format!("unknown action {other:?}")),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Seconds since the epoch of `YYYYMMDDTHHMMSSZ`.
fn time_of(x_date: &str) -> Option<i64> {
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        x_date.get(0..4)?,
        x_date.get(4..6)?,
        x_date.get(6..8)?,
        x_date.get(9..11)?,
        x_date.get(11..13)?,
        x_date.get(13..15)?
    );
    aws_smithy_types::DateTime::from_str(&iso, aws_smithy_types::date_time::Format::DateTime)
        .ok()
        .map(|t| t.secs())
}
