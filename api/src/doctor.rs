//! What `weft doctor` prints with `--json`: a list of checks, each with its status, what was
//! found and the fix. The schema scripts rely on: check names are stable (`kernel.tun`,
//! `sysctl.ip_forward`, `peer.<nickname>.udp`, ...; docs/operations.md lists them), statuses are
//! `ok`, `warn`, `fail` and `skip`, and the exit code is 1 exactly when a check has `fail`.
//! Fields are added with `#[serde(default)]`, never removed or renamed.

use serde::{Deserialize, Serialize};

/// The outcome of one check, from best to worst (`skip` between: nothing was judged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing to fix.
    Ok,
    /// Not judged: what it needs is missing or does not apply (the `found` text says why).
    Skip,
    /// Works, but worse than it should (slower path, an overlay that may get in the way, ...):
    /// does not fail the run.
    Warn,
    /// Breaks pods, Services or the mesh: the run exits with 1.
    Fail,
}

impl Status {
    /// The word printed in the human output: `OK`, `SKIP`, `WARN`, `FAIL`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Skip => "SKIP",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Stable name, dotted: `kernel.vxlan`, `peer.h2.tcp`, ...
    pub name: String,
    /// Its outcome.
    pub status: Status,
    /// What was found (also for `ok` and `skip`: the evidence, or why it was not judged).
    pub found: String,
    /// The fix, a command or a sentence (empty when there is nothing to fix).
    #[serde(default)]
    pub fix: String,
}

impl Check {
    /// A check with no fix.
    pub fn new(name: impl Into<String>, status: Status, found: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status,
            found: found.into(),
            fix: String::new(),
        }
    }

    /// The same check with `fix`.
    pub fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = fix.into();
        self
    }
}

/// Everything `weft doctor` checked, with the counts per status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The checks in the order they were made.
    pub checks: Vec<Check>,
    /// Checks with `ok`.
    pub ok: usize,
    /// Checks with `warn`.
    pub warn: usize,
    /// Checks with `fail`.
    pub fail: usize,
    /// Checks with `skip`.
    pub skip: usize,
}

impl Report {
    /// The report of `checks`, counted.
    pub fn new(checks: Vec<Check>) -> Report {
        let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
        Report {
            ok: count(Status::Ok),
            warn: count(Status::Warn),
            fail: count(Status::Fail),
            skip: count(Status::Skip),
            checks,
        }
    }

    /// The exit code of `weft doctor`: 1 when a check failed, else 0 (warnings do not fail).
    pub fn exit_code(&self) -> i32 {
        i32::from(self.fail > 0)
    }

    /// The check named `name`.
    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The human output: one line per check, `STATUS name: found; fix: ...`, then the counts.
    pub fn render(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!(
                "{:<4}  {:<width$}  {}",
                c.status.label(),
                c.name,
                c.found
            ));
            if !c.fix.is_empty() {
                out.push_str(&format!(" -- fix: {}", c.fix));
            }
            out.push('\n');
        }
        out.push_str(&format!(
            "{} ok, {} warn, {} fail, {} skip\n",
            self.ok, self.warn, self.fail, self.skip
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_exit_code_and_json() {
        let r = Report::new(vec![
            Check::new("a", Status::Ok, "fine"),
            Check::new("b", Status::Warn, "slow").fix("do x"),
        ]);
        assert_eq!((r.ok, r.warn, r.fail, r.skip), (1, 1, 0, 0));
        assert_eq!(r.exit_code(), 0, "warnings do not fail");
        let failed = Report::new(vec![Check::new("c", Status::Fail, "broken").fix("y")]);
        assert_eq!(failed.exit_code(), 1);
        let v = serde_json::to_value(&failed).unwrap();
        assert_eq!(v["checks"][0]["status"], "fail");
        assert_eq!(v["checks"][0]["fix"], "y");
        assert_eq!(v["fail"], 1);
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back, failed);
        // A check without a fix field still reads.
        let c: Check =
            serde_json::from_str(r#"{"name":"n","status":"skip","found":"why"}"#).unwrap();
        assert_eq!(c.fix, "");
        assert!(Status::Fail > Status::Warn && Status::Warn > Status::Skip);
    }

    #[test]
    fn renders_one_line_per_check() {
        let r = Report::new(vec![
            Check::new("kernel.tun", Status::Ok, "/dev/net/tun"),
            Check::new("sysctl.ip_forward", Status::Fail, "0").fix("sysctl -w x=1"),
        ]);
        let text = r.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "OK    kernel.tun         /dev/net/tun");
        assert_eq!(lines[1], "FAIL  sysctl.ip_forward  0 -- fix: sysctl -w x=1");
        assert_eq!(lines[2], "1 ok, 0 warn, 1 fail, 0 skip");
    }
}
