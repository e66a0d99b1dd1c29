//! Logs on stderr, through the secret redactor: a secret that reached a message by accident
//! (a libgit2 error echoing a URL, say) is scrubbed before it is written.

use std::io::Write;

/// Log lines go through [`crate::secret::redact`] before reaching stderr.
struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(crate::secret::redact(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Install the global subscriber: level from `TAGFLOW_LOG` (default `info`), text or JSON.
pub fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TAGFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or a collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(|| RedactingStderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
