//! The secret file at run time: reread every second when its contents change, and on SIGHUP;
//! a good file replaces the control plane's secrets ([`gossip::driver::Gossip::set_secrets`],
//! which re-handshakes or closes connections), a bad one is logged and shown in status while the
//! last good secrets stay in force.

use super::{lock, Daemon};
use gossip::secure::{keyring, Keyring};
use std::time::SystemTime;

/// What the router knows of its secret file, for status.
#[derive(Debug, Default)]
pub(crate) struct SecretFile {
    /// The contents last read (good or bad), to notice changes.
    last: Option<Vec<u8>>,
    /// Why the file last failed to read or parse, while it still does.
    pub(crate) error: Option<String>,
    /// When the secrets were last replaced from the file.
    pub(crate) reloaded: Option<SystemTime>,
    /// Successful rereads that changed the secrets.
    pub(crate) reloads: u64,
    /// Rereads that failed (unreadable file, bad line).
    pub(crate) errors: u64,
}

impl Daemon {
    /// Rereads the secret file; applies it when its contents changed, or always when `forced`
    /// (SIGHUP: also retries re-handshakes at once).
    pub(super) fn reload_secrets(&self, forced: bool) {
        let Some(path) = &self.cfg.secret_file else {
            return;
        };
        let read = std::fs::read(path);
        let mut st = lock(&self.secret_file);
        let bytes = match read {
            Ok(b) => b,
            Err(e) => {
                let msg = format!("reading {}: {e}", path.display());
                if st.error.as_deref() != Some(&msg) || forced {
                    tracing::error!("secret file: {msg}; keeping the secrets in force");
                    st.errors += 1;
                }
                st.error = Some(msg);
                st.last = None;
                return;
            }
        };
        if !forced && st.last.as_deref() == Some(&bytes) {
            return;
        }
        if st.last.is_none() && !forced && st.error.is_none() {
            // The first look: nothing to do if the file still holds the secrets read at start.
            let same = Keyring::parse(&bytes)
                .is_ok_and(|k| k.fingerprints() == self.gossip.secret_fingerprints().0);
            if same {
                st.last = Some(bytes);
                return;
            }
        }
        st.last = Some(bytes.clone());
        match Keyring::parse(&bytes) {
            Ok(k) => {
                let fps = keyring::list(k.fingerprints());
                match self.gossip.set_secrets(k) {
                    Ok(retired) => {
                        tracing::info!(
                            accepted = %fps,
                            retired = %keyring::list(retired),
                            forced,
                            "secret file reread"
                        );
                        st.error = None;
                        st.reloaded = Some(SystemTime::now());
                        st.reloads += 1;
                    }
                    Err(e) => {
                        st.error = Some(e.to_string());
                        st.errors += 1;
                    }
                }
            }
            Err(e) => {
                tracing::error!(
                    "secret file {}: {e}; keeping the secrets in force",
                    path.display()
                );
                st.error = Some(format!("{}: {e}", path.display()));
                st.errors += 1;
            }
        }
    }
}
