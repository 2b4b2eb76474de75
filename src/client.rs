//! Building an `aws_sdk_s3::Client` for any S3-compatible store.
//!
//! aws-sdk-s3 by default sends uploads with a signed streaming checksum trailer
//! (`aws-chunked` + CRC32). AWS S3, MinIO and s3s accept it; Garage 2.x and some other stores
//! reject it. [`ChecksumPolicy::WhenRequired`] turns it off
//! (`RequestChecksumCalculation::WhenRequired`), which every store accepts. Integrity of the
//! ciphertext in transit then rests on TLS (and, on OSS, on its CRC64 header).

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation};

/// When aws-sdk-s3 should add request checksums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChecksumPolicy {
    /// Only when an operation requires one: works with every S3-compatible store (Garage too).
    #[default]
    WhenRequired,
    /// aws-sdk-s3's default: a CRC32 trailer on every upload (AWS S3, MinIO, s3s).
    WhenSupported,
}

/// Connection settings for an S3-compatible store.
///
/// ```no_run
/// # async fn demo() {
/// let client = cryptobucket::ClientOptions::new()
///     .endpoint_url("http://127.0.0.1:3900")
///     .region("garage")
///     .force_path_style(true)
///     .build()
///     .await;
/// # let _ = client;
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    endpoint_url: Option<String>,
    region: Option<String>,
    force_path_style: bool,
    checksum: ChecksumPolicy,
    static_credentials: Option<(String, String)>,
}

impl ClientOptions {
    /// Defaults: AWS credential chain, region from the environment or `us-east-1`,
    /// [`ChecksumPolicy::WhenRequired`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A custom endpoint (MinIO, Garage, OSS's S3 endpoint, ...).
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Sets or clears the endpoint.
    pub fn set_endpoint_url(mut self, url: Option<String>) -> Self {
        self.endpoint_url = url;
        self
    }

    /// The region (else `AWS_REGION`, else `us-east-1`).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets or clears the region.
    pub fn set_region(mut self, region: Option<String>) -> Self {
        self.region = region;
        self
    }

    /// Path-style addressing (`http://host/bucket/key`), needed by most self-hosted stores.
    pub fn force_path_style(mut self, yes: bool) -> Self {
        self.force_path_style = yes;
        self
    }

    /// Request checksum behaviour.
    pub fn checksum(mut self, policy: ChecksumPolicy) -> Self {
        self.checksum = policy;
        self
    }

    /// Fixed credentials instead of the AWS chain (tests, embedded servers).
    pub fn static_credentials(
        mut self,
        access_key: impl Into<String>,
        secret_key: impl Into<String>,
    ) -> Self {
        self.static_credentials = Some((access_key.into(), secret_key.into()));
        self
    }

    /// Loads the AWS configuration chain and builds the client.
    pub async fn build(self) -> aws_sdk_s3::Client {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some((ak, sk)) = &self.static_credentials {
            loader = loader.credentials_provider(Credentials::new(ak, sk, None, None, "static"));
        }
        let shared = loader.load().await;
        let region = self
            .region
            .map(Region::new)
            .or_else(|| shared.region().cloned())
            .unwrap_or_else(|| Region::new("us-east-1"));
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .region(region)
            .force_path_style(self.force_path_style)
            .request_checksum_calculation(match self.checksum {
                ChecksumPolicy::WhenRequired => RequestChecksumCalculation::WhenRequired,
                ChecksumPolicy::WhenSupported => RequestChecksumCalculation::WhenSupported,
            });
        if let Some(url) = self.endpoint_url {
            b = b.endpoint_url(url);
        }
        aws_sdk_s3::Client::from_conf(b.build())
    }
}
