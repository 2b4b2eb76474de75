//! Exit codes: one per class of failure, so scripts can tell what to do next.

use std::process::ExitCode;

use cryptobucket::{Error, ErrorKind};

/// The table `--help` shows.
pub(crate) const HELP: &str = "\
Exit codes:
  0    success
  1    other failure (service error, local I/O, access denied, ...)
  2    usage: bad arguments or input
  3    not found: no such object, bucket or file
  4    key or decryption failure: wrong or missing key, tampered or unverifiable data,
       unsupported format
  5    transient: the network or the store failed, retries ran out; running again may work
  6    partial: some files of a directory transfer failed (each is listed), the others were
       copied
  130  interrupted (Ctrl-C); unfinished transfers keep their checkpoints";

/// The exit code of a failed command.
pub(crate) fn code(e: &Error) -> u8 {
    match e.kind() {
        ErrorKind::Partial => 6,
        ErrorKind::Cancelled => 130,
        ErrorKind::InvalidInput | ErrorKind::RangeNotSatisfiable => 2,
        ErrorKind::NotFound => 3,
        k if k.is_integrity_failure() => 4,
        ErrorKind::NoMatchingKey
        | ErrorKind::KeyUnwrap
        | ErrorKind::InvalidKey
        | ErrorKind::NotEncrypted
        | ErrorKind::InvalidMetadata
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidFormat => 4,
        ErrorKind::Busy => 5,
        _ if e.is_retryable() => 5,
        _ => 1,
    }
}

/// [`code`] as an [`ExitCode`].
pub(crate) fn exit_code(e: &Error) -> ExitCode {
    ExitCode::from(code(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let c = |k| code(&Error::new(k, "x"));
        assert_eq!(c(ErrorKind::InvalidInput), 2);
        assert_eq!(c(ErrorKind::NotFound), 3);
        assert_eq!(c(ErrorKind::KeyUnwrap), 4);
        assert_eq!(c(ErrorKind::TagMismatch), 4);
        assert_eq!(c(ErrorKind::Transport), 5);
        assert_eq!(c(ErrorKind::Partial), 6);
        assert_eq!(c(ErrorKind::Io), 1);
        assert_eq!(
            code(&Error::new(ErrorKind::Service, "503").with_retryable(true)),
            5
        );
        assert_eq!(c(ErrorKind::Service), 1);
    }
}
