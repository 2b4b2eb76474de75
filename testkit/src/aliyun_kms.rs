//! A local stand-in for Alibaba Cloud KMS, which cannot run here: the RPC protocol over HTTP
//! (`GenerateDataKey`, `Encrypt`, `Decrypt`, version 2016-01-20, JSON answers and error
//! bodies), checking every request's signature (version 1.0, HMAC-SHA1) with its own code,
//! the AccessKey id, the STS token when configured, the timestamp and nonce reuse. Blobs are
//! base64(key id ‖ nonce ‖ AES-256-GCM(plaintext, AAD = encryption context)), so a wrong
//! context or key fails as on the real service. Both this crate and oss2 (through
//! aliyun-python-sdk-core) talk to it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine as _;
use http_body_util::BodyExt as _;

use crate::local_http::{LocalServer, Resp, encode, json_answer, parse_pairs};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Default)]
struct State {
    keys: HashMap<String, [u8; 32]>,
    nonces: HashSet<String>,
    calls: HashMap<String, usize>,
}

struct Config {
    access_key_id: String,
    secret: String,
    sts_token: Option<String>,
}

/// A running fake KMS; stopped on drop.
pub struct FakeKms {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    _server: LocalServer,
}

impl FakeKms {
    /// Accepts requests signed with this AccessKey (and, if given, carrying this STS token).
    pub fn start(access_key_id: &str, secret: &str, sts_token: Option<&str>) -> Self {
        let config = Arc::new(Config {
            access_key_id: access_key_id.to_owned(),
            secret: secret.to_owned(),
            sts_token: sts_token.map(str::to_owned),
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

    /// Creates a master key; returns its id (UUID form, as Alibaba's key ids are).
    pub fn create_key(&self) -> String {
        let mut raw = [0u8; 16];
        aws_lc_rs::rand::fill(&mut raw).unwrap();
        let h = hex::encode(raw);
        let id = format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        );
        let mut key = [0u8; 32];
        aws_lc_rs::rand::fill(&mut key).unwrap();
        self.state.lock().unwrap().keys.insert(id.clone(), key);
        id
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
        serde_json::json!({"Code": code, "Message": message, "RequestId": "fake-request"}),
    )
}

fn expected_signature(method: &str, params: &BTreeMap<String, String>, secret: &str) -> String {
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k.as_str() != "Signature")
        .map(|(k, v)| (encode(k), encode(v)))
        .collect();
    pairs.sort();
    let query: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let sts = format!("{method}&{}&{}", encode("/"), encode(&query.join("&")));
    let key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        format!("{secret}&").as_bytes(),
    );
    B64.encode(aws_lc_rs::hmac::sign(&key, sts.as_bytes()).as_ref())
}

/// The AAD of a blob: the encryption context as a sorted JSON map ("" when absent or empty).
fn context_aad(params: &BTreeMap<String, String>) -> Result<Vec<u8>, Box<Resp>> {
    match params.get("EncryptionContext").map(String::as_str) {
        None | Some("") => Ok(Vec::new()),
        Some(text) => {
            let map: BTreeMap<String, String> = serde_json::from_str(text).map_err(|_| {
                error(
                    400,
                    "InvalidParameter",
                    "EncryptionContext is not a JSON object of strings",
                )
            })?;
            Ok(serde_json::to_vec(&map).unwrap())
        }
    }
}

async fn handle(
    req: hyper::Request<hyper::body::Incoming>,
    st: &Mutex<State>,
    config: &Config,
) -> Resp {
    let method = req.method().as_str().to_owned();
    let mut params = BTreeMap::new();
    if let Some(q) = req.uri().query() {
        parse_pairs(q, &mut params);
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(400, "BadRequest", "cannot read body"),
    };
    parse_pairs(&String::from_utf8_lossy(&body), &mut params);
    let action = params.get("Action").cloned().unwrap_or_default();
    *st.lock().unwrap().calls.entry(action.clone()).or_default() += 1;

    // Authentication, as the service does it.
    for required in [
        "AccessKeyId",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "Timestamp",
        "Version",
    ] {
        if !params.contains_key(required) {
            return error(400, "MissingParameter", &format!("{required} is missing"));
        }
    }
    if params["AccessKeyId"] != config.access_key_id {
        return error(404, "InvalidAccessKeyId.NotFound", "unknown AccessKeyId");
    }
    if params["SignatureMethod"] != "HMAC-SHA1" || params["SignatureVersion"] != "1.0" {
        return error(400, "InvalidParameter", "unsupported signature method");
    }
    if params["Signature"] != expected_signature(&method, &params, &config.secret) {
        return error(
            400,
            "SignatureDoesNotMatch",
            "the request signature does not match",
        );
    }
    if config.sts_token.as_deref() != params.get("SecurityToken").map(String::as_str) {
        return error(
            400,
            "InvalidSecurityToken.Mismatch",
            "wrong or missing SecurityToken",
        );
    }
    let ts = aws_smithy_types::DateTime::from_str(
        &params["Timestamp"],
        aws_smithy_types::date_time::Format::DateTime,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    match ts {
        Ok(t) if (t.secs() - now).abs() <= 900 => {}
        _ => {
            return error(
                400,
                "InvalidTimeStamp.Expired",
                "timestamp missing or off by more than 15 minutes",
            );
        }
    }
    if !st
        .lock()
        .unwrap()
        .nonces
        .insert(params["SignatureNonce"].clone())
    {
        return error(400, "SignatureNonceUsed", "nonce reused");
    }
    if params["Version"] != "2016-01-20" {
        return error(400, "InvalidVersion", "unsupported API version");
    }
    let aad = match context_aad(&params) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    match action.as_str() {
        "Encrypt" | "GenerateDataKey" => {
            let key_id = params.get("KeyId").cloned().unwrap_or_default();
            let Some(master) = st.lock().unwrap().keys.get(&key_id).copied() else {
                return error(
                    404,
                    "Forbidden.KeyNotFound",
                    "the specified key does not exist",
                );
            };
            let (plaintext, extra) = if action == "Encrypt" {
                match params.get("Plaintext") {
                    Some(p) => (p.clone(), None),
                    None => return error(400, "MissingParameter", "Plaintext is missing"),
                }
            } else {
                let n: usize = params
                    .get("NumberOfBytes")
                    .map(|n| n.parse().unwrap_or(0))
                    .unwrap_or(32);
                if params
                    .get("KeySpec")
                    .map(String::as_str)
                    .unwrap_or("AES_256")
                    != "AES_256"
                    || n == 0
                    || n > 1024
                {
                    return error(400, "InvalidParameter", "bad KeySpec or NumberOfBytes");
                }
                let mut raw = vec![0u8; n];
                aws_lc_rs::rand::fill(&mut raw).unwrap();
                let p = B64.encode(&raw);
                (p.clone(), Some(p))
            };
            let mut nonce = [0u8; 12];
            aws_lc_rs::rand::fill(&mut nonce).unwrap();
            let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &master).unwrap());
            let mut buf = plaintext.into_bytes();
            key.seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..]),
                &mut buf,
            )
            .unwrap();
            let mut blob = key_id.clone().into_bytes();
            blob.extend_from_slice(&nonce);
            blob.extend_from_slice(&buf);
            let mut out = serde_json::json!({
                "KeyId": key_id, "CiphertextBlob": B64.encode(&blob), "RequestId": "fake-request",
            });
            if let Some(p) = extra {
                out["Plaintext"] = p.into();
            }
            json_answer(200, out)
        }
        "Decrypt" => {
            let Some(blob) = params
                .get("CiphertextBlob")
                .and_then(|b| B64.decode(b).ok())
            else {
                return error(400, "InvalidCiphertext", "the ciphertext is not valid");
            };
            if blob.len() < 36 + 12 + 16 {
                return error(400, "InvalidCiphertext", "the ciphertext is not valid");
            }
            let key_id = String::from_utf8_lossy(&blob[..36]).into_owned();
            let Some(master) = st.lock().unwrap().keys.get(&key_id).copied() else {
                return error(400, "InvalidCiphertext", "the ciphertext is not valid");
            };
            let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &master).unwrap());
            let nonce = Nonce::try_assume_unique_for_key(&blob[36..48]).unwrap();
            let mut buf = blob[48..].to_vec();
            match key.open_in_place(nonce, Aad::from(&aad[..]), &mut buf) {
                Ok(plain) => json_answer(
                    200,
                    serde_json::json!({
                        "KeyId": key_id,
                        "Plaintext": String::from_utf8_lossy(plain),
                        "RequestId": "fake-request",
                    }),
                ),
                Err(_) => error(
                    400,
                    "InvalidCiphertext",
                    "the ciphertext or its context is not valid",
                ),
            }
        }
        _ => error(400, "InvalidAction.NotFound", "unknown action"),
    }
}
