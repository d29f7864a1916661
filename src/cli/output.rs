//! Writing to stdout the way a Unix tool should: a closed pipe (`urbdadm dump | head`) is not
//! an error.

use std::io::{self, Write};

use super::error::CliError;

/// Writes `text` to stdout; a broken pipe counts as success.
pub fn print(text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::exec(
            anyhow::Error::new(e).context("writing to stdout"),
        )),
    }
}
