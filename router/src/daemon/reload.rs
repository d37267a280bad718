//! `weft reload` and SIGHUP: the configuration read again (the router's own command line and
//! environment, the configuration file as it is now) and what of it applies without a restart:
//! the `--peer` list (new addresses dialled, removed ones forgotten), the log filter, the policy
//! directory; the secret file is reread as well. Everything else that changed is named in the
//! answer and keeps its running value.

use super::{lock, Daemon};
use std::net::SocketAddr;
use weft_api::control::ReloadAnswer;

impl Daemon {
    /// Reads the configuration again and applies what can change.
    pub(crate) fn reload(&self) -> ReloadAnswer {
        let mut answer = ReloadAnswer::default();
        self.reload_secrets(true);
        answer.applied.push("secret file reread".into());
        let Some(r) = &self.cfg.reloader else {
            answer.error = Some("this router cannot read its configuration again".into());
            return answer;
        };
        let new = match (r.config)() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("reload: the configuration is not valid, nothing changed: {e}");
                answer.error = Some(e);
                return answer;
            }
        };
        // Peers: the --peer list against the one in force (seeds added with `weft connect` or
        // learnt from Kubernetes are left alone).
        let old: Vec<SocketAddr> = lock(&self.config_peers).clone();
        for a in new.peers.iter().filter(|a| !old.contains(a)) {
            self.connect(*a);
            answer.applied.push(format!("peer {a} added"));
        }
        for a in old.iter().filter(|a| !new.peers.contains(a)) {
            self.forget(*a);
            answer.applied.push(format!("peer {a} removed"));
        }
        *lock(&self.config_peers) = new.peers.clone();
        // The log filter.
        let mut log = lock(&self.log_filter);
        if *log != new.log {
            match (r.set_log)(&new.log) {
                Ok(()) => {
                    answer.applied.push(format!("log {}", new.log));
                    *log = new.log.clone();
                }
                Err(e) => answer.applied.push(format!("log unchanged: {e}")),
            }
        }
        drop(log);
        // The policy directory (while policy is on).
        if let Some(p) = &self.policy {
            if let (Some(d), Some(_)) = (&new.policy.dir, p.dir()) {
                if Some(d) != p.dir().as_ref() {
                    p.set_dir(d.clone());
                    answer.applied.push(format!("policy-dir {}", d.display()));
                }
            }
        }
        answer.needs_restart = self.cfg.needs_restart(&new);
        tracing::info!(
            applied = ?answer.applied,
            needs_restart = ?answer.needs_restart,
            "reloaded the configuration"
        );
        answer
    }
}
