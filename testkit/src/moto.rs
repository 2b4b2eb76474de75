//! A real AWS-KMS-protocol server for the tests: `moto_server` (`moto[server]` 5.1.22 from the
//! test venv that `scripts/test.sh` creates) on a free loopback port, stopped on drop. Like the
//! oss2 tests, these fail, never skip, when the venv is missing.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server.
pub struct Moto {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    child: Child,
}

fn venv_bin(name: &str) -> PathBuf {
    let python = std::env::var_os("CRYPTOBUCKET_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join(".venv/bin/python"));
    let bin = python.parent().expect("venv bin dir").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run ./scripts/test.sh (it creates .venv with moto[server]==5.1.22)",
        bin.display()
    );
    bin
}

impl Moto {
    /// Starts moto and waits until it accepts connections.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(venv_bin("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    /// A KMS client for this server (fixed test credentials, us-east-1).
    pub fn kms_client(&self) -> aws_sdk_kms::Client {
        let conf = aws_sdk_kms::Config::builder()
            .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
            .region(aws_sdk_kms::config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_kms::config::Credentials::new(
                "testing", "testing", None, None, "moto",
            ))
            .build();
        aws_sdk_kms::Client::from_conf(conf)
    }

    /// Creates a symmetric key and, if given, an alias for it; returns the key id.
    pub async fn create_key(&self, alias: Option<&str>) -> String {
        let c = self.kms_client();
        let id = c
            .create_key()
            .send()
            .await
            .expect("CreateKey")
            .key_metadata
            .expect("key metadata")
            .key_id;
        if let Some(a) = alias {
            c.create_alias()
                .alias_name(a)
                .target_key_id(&id)
                .send()
                .await
                .expect("CreateAlias");
        }
        id
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
