//! Building an `aws_sdk_s3::Client` for any S3-compatible store.
//!
//! aws-sdk-s3 by default sends uploads with a signed streaming checksum trailer
//! (`aws-chunked` + CRC32). AWS S3, MinIO and s3s accept it; Garage 2.x and some other stores
//! reject it. [`ChecksumPolicy::WhenRequired`] turns it off
//! (`RequestChecksumCalculation::WhenRequired`), which every store accepts. Integrity of the
//! ciphertext in transit then rests on TLS (and, on OSS, on its CRC64 header).

use aws_config::BehaviorVersion;
use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation};
use zeroize::Zeroizing;

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
///
/// `Debug` shows the access key id but never the secret key:
///
/// ```
/// let o = cryptobucket::ClientOptions::new().static_credentials("AKID", "very-secret");
/// let shown = format!("{o:?}");
/// assert!(shown.contains("AKID") && !shown.contains("very-secret"));
/// ```
#[derive(Clone, Default)]
pub struct ClientOptions {
    endpoint_url: Option<String>,
    region: Option<String>,
    force_path_style: bool,
    checksum: ChecksumPolicy,
    static_credentials: Option<(String, Zeroizing<String>)>,
    retry: Option<RetryConfig>,
    timeouts: Option<TimeoutConfig>,
    profile: Option<String>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("endpoint_url", &self.endpoint_url)
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field("checksum", &self.checksum)
            .field(
                "static_credentials",
                &self
                    .static_credentials
                    .as_ref()
                    .map(|(ak, _)| format!("{ak} / ** redacted **")),
            )
            .field("retry", &self.retry)
            .field("timeouts", &self.timeouts)
            .field("profile", &self.profile)
            .finish()
    }
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

    /// A named profile of the shared AWS config and credentials files (`~/.aws/config`,
    /// `~/.aws/credentials`, or `AWS_CONFIG_FILE` / `AWS_SHARED_CREDENTIALS_FILE`) for
    /// credentials and region, instead of `AWS_PROFILE` or `default`. Credentials in the
    /// environment (`AWS_ACCESS_KEY_ID`, ...) still come first, as in the AWS CLI.
    ///
    /// ```
    /// let o = cryptobucket::ClientOptions::new().profile("backup");
    /// assert!(format!("{o:?}").contains("backup"));
    /// ```
    pub fn profile(mut self, name: impl Into<String>) -> Self {
        self.profile = Some(name.into());
        self
    }

    /// Sets or clears the profile.
    pub fn set_profile(mut self, name: Option<String>) -> Self {
        self.profile = name;
        self
    }

    /// Fixed credentials instead of the AWS chain (tests, embedded servers).
    pub fn static_credentials(
        mut self,
        access_key: impl Into<String>,
        secret_key: impl Into<String>,
    ) -> Self {
        self.static_credentials = Some((access_key.into(), Zeroizing::new(secret_key.into())));
        self
    }

    /// The S3 client's own retry policy (default: the SDK's standard policy, 3 attempts). It
    /// applies to what the engine does not retry itself (`delete_object`, `copy_object`, your
    /// own calls on the client); every request the engine retries (`put_object`, `get_object`,
    /// `head_object`, parts and ranges of every transfer) switches it off per request, so
    /// attempts do not multiply (5 × 3 = 15 tries of one part).
    pub fn retry_config(mut self, retry: RetryConfig) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Connect and operation timeouts of the S3 client (default: connect 10 s and nothing
    /// else: aws-smithy's read timeout runs from sending the request to the response headers,
    /// so it would also cut off the upload of a large part on a slow link; a multi-GiB part or
    /// stream legitimately takes long).
    pub fn timeout_config(mut self, timeouts: TimeoutConfig) -> Self {
        self.timeouts = Some(timeouts);
        self
    }

    /// Loads the AWS configuration chain and builds the client.
    pub async fn build(self) -> aws_sdk_s3::Client {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(name) = &self.profile {
            loader = loader.profile_name(name);
        }
        if let Some((ak, sk)) = &self.static_credentials {
            loader = loader.credentials_provider(Credentials::new(
                ak,
                sk.as_str(),
                None,
                None,
                "static",
            ));
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
            .retry_config(self.retry.unwrap_or_else(RetryConfig::standard))
            .timeout_config(self.timeouts.unwrap_or_else(|| {
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .build()
            }))
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

/// A per-request configuration override: the S3 client's own retries on or off. The engine
/// turns them off for requests it retries itself.
pub(crate) fn retry_override(sdk_retries: bool) -> aws_sdk_s3::config::Builder {
    let b = aws_sdk_s3::config::Builder::default();
    if sdk_retries {
        b
    } else {
        b.retry_config(RetryConfig::disabled())
    }
}
