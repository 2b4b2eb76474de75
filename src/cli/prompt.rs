//! Asking for a passphrase on the terminal, without echo.

use std::io::IsTerminal as _;

use cryptobucket::{Error, ErrorKind, Result};
use zeroize::Zeroizing;

/// Asks for the passphrase of `what` on the controlling terminal without echo; when `confirm`
/// (keys that will write) asks twice and refuses a mismatch, so a typo cannot make new objects
/// unreadable. Refuses when stdin is not a terminal: scripts name a variable or a file.
pub(crate) fn passphrase(what: &str, confirm: bool) -> Result<Zeroizing<String>> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{what} needs a passphrase and stdin is not a terminal to ask on; give it with \
                 a variable or a file"
            ),
        ));
    }
    let ask = |prompt: String| {
        rpassword::prompt_password(prompt)
            .map(Zeroizing::new)
            .map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("cannot read the passphrase from the terminal: {e}"),
                )
            })
    };
    let first = ask(format!("passphrase for {what}: "))?;
    if confirm {
        let again = ask(format!("passphrase for {what} (again): "))?;
        if *again != *first {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "the two passphrases differ; nothing was done",
            ));
        }
    }
    Ok(first)
}
