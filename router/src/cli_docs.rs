//! `weft completions SHELL` and `weft man [--dir DIR]`: shell completions (clap_complete) and
//! manual pages (clap_mangen, section 8) generated from the command line's own clap definition,
//! so they cannot drift from the flags. The packaging script (`scripts/package-deb.sh`) runs
//! both against the binary it packages.
//!
//! The functions take the finished [`clap::Command`] (with the `WEFT_*` variables of every
//! router option already attached) and write to what they are given; `main.rs` only parses the
//! subcommand and calls them.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The manual section of every page: system administration commands and daemons.
pub const MAN_SECTION: &str = "8";

/// The shells `weft completions` writes for.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    /// bash (bash-completion).
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

impl Shell {
    fn generator(self) -> clap_complete::Shell {
        match self {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// Writes the completion script of `cmd` for `shell` to `out`.
pub fn completions(mut cmd: clap::Command, shell: Shell, out: &mut dyn Write) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell.generator(), &mut cmd, name, out);
}

/// Writes the top page (`weft.8`) of `cmd` to `out`.
pub fn man_page(cmd: clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    page(cmd).render(out)
}

/// Writes one page per visible command of `cmd` into `dir` (`weft.8`, `weft-status.8`,
/// `weft-config-check.8`, ...) and returns their paths, the top page first.
pub fn man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = cmd.disable_help_subcommand(true);
    // Building fills in each subcommand's display name (`weft-status`) and bin name.
    cmd.build();
    let mut written = Vec::new();
    write_tree(&cmd, dir, &mut written)?;
    Ok(written)
}

fn write_tree(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
    written.push(page(cmd.clone()).generate_to(dir)?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_tree(sub, dir, written)?;
    }
    Ok(())
}

fn page(cmd: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd)
        .section(MAN_SECTION)
        .manual("Weft")
        .source(format!("weft {}", env!("CARGO_PKG_VERSION")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn bash_completion_knows_the_subcommands_and_their_flags() {
        let bash = text(|o| completions(crate::cli_command(), Shell::Bash, o));
        for word in [
            "status",
            "router",
            "config",
            "--state-dir",
            "--pod-cidr",
            "topology",
        ] {
            assert!(bash.contains(word), "no {word:?} in the bash completion");
        }
        for shell in [Shell::Zsh, Shell::Fish] {
            let s = text(|o| completions(crate::cli_command(), shell, o));
            assert!(s.contains("state-dir") && s.contains("status"), "{shell:?}");
        }
    }

    #[test]
    fn one_page_per_command_with_values_and_environment() {
        let dir = std::env::temp_dir().join(format!("weft-man-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pages = man_pages(crate::cli_command(), &dir).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names[0], "weft.8");
        for n in [
            "weft-router.8",
            "weft-status.8",
            "weft-config.8",
            "weft-config-check.8",
        ] {
            assert!(names.iter().any(|x| x == n), "no {n} in {names:?}");
        }
        assert!(!names
            .iter()
            .any(|x| x.contains("completions") || x.contains("help")));
        let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
        let status = read("weft-status.8");
        assert!(
            status.starts_with(".ie") || status.contains(".TH"),
            "{status}"
        );
        for word in ["topology", "policy", "macs", "state"] {
            assert!(status.contains(word), "no {word:?} in weft-status.8");
        }
        let router = read("weft-router.8");
        // Every router option has its variable: the explicit ones and those with_env adds.
        for var in ["WEFT_POD_CIDR", "WEFT_SECRET_FILE", "WEFT_PEER", "WEFT_MTU"] {
            assert!(router.contains(var), "no {var} in weft-router.8");
        }
        let top = text(|o| man_page(crate::cli_command(), o).unwrap());
        assert_eq!(top, read("weft.8"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
