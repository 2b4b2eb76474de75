//! The 3-node Garage cluster of `scripts/garage-cluster.sh`, as its environment describes it.

use cryptobucket::ClientOptions;

/// A variable of the cluster's environment; panics with how to start the cluster if unset (a
/// missing peer fails a test, never skips it).
pub fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the cluster with scripts/garage-cluster.sh start")
    })
}

/// The S3 endpoints of the cluster's nodes.
pub fn endpoints() -> Vec<String> {
    var("GARAGE_ENDPOINTS")
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// The cluster's bucket.
pub fn bucket() -> String {
    var("GARAGE_BUCKET")
}

/// A client of the node at `endpoint`. Garage rejects aws-sdk-s3's default signed streaming
/// checksum trailer; ClientOptions' default (RequestChecksumCalculation::WhenRequired) is the
/// documented setting.
pub async fn client(endpoint: &str) -> aws_sdk_s3::Client {
    ClientOptions::new()
        .endpoint_url(endpoint)
        .region(var("GARAGE_REGION"))
        .force_path_style(true)
        .static_credentials(var("GARAGE_ACCESS_KEY_ID"), var("GARAGE_SECRET_ACCESS_KEY"))
        .build()
        .await
}
