//! The optional plugin log (`logFile` in the configuration): one line per event, appended.
//! Without it the plugin writes nothing but its protocol output on stdout.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

static LOG: OnceLock<Mutex<File>> = OnceLock::new();

/// Opens (appends to) the log file; a file that cannot be opened is ignored (logging must never
/// fail an operation).
pub fn open(path: &Path) {
    if let Ok(f) = OpenOptions::new().create(true).append(true).open(path) {
        let _ = LOG.set(Mutex::new(f));
    }
}

/// Logs one line (nothing when no log file is open).
pub fn line(msg: &str) {
    if let Some(m) = LOG.get() {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if let Ok(mut f) = m.lock() {
            let _ = writeln!(
                f,
                "{}.{:03} weft-cni[{}] {msg}",
                t.as_secs(),
                t.subsec_millis(),
                std::process::id()
            );
        }
    }
}
