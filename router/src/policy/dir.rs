//! The `--policy-dir` source: a directory of Kubernetes manifests (`*.yaml`, `*.yml`, `*.json`,
//! hidden files ignored, so a writer can rename a finished temporary file into place), read
//! again when a file's name, size or modification time changes. A file that does not parse keeps
//! its last good objects in force and is reported; a file never read well counts for nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use weft_policy::{manifest, Object};

/// What identifies a version of a file without reading it.
type Signature = (u64, Option<SystemTime>);

#[derive(Debug, Default)]
struct FileState {
    sig: Option<Signature>,
    /// The objects of the last version that parsed.
    good: Option<Vec<Object>>,
    /// Why the current version does not parse.
    error: Option<String>,
}

/// The directory and what was last read of each file.
#[derive(Debug)]
pub struct DirSource {
    path: PathBuf,
    files: BTreeMap<String, FileState>,
    /// Why the directory itself cannot be read.
    dir_error: Option<String>,
    read_once: bool,
}

/// The result of one look at the directory.
#[derive(Debug)]
pub enum Poll {
    /// Nothing changed since the last look.
    Unchanged,
    /// Something changed: every object now in force (the last good version of each file).
    Changed(Vec<Object>),
}

impl DirSource {
    /// A source for `path` (not read yet).
    pub fn new(path: PathBuf) -> DirSource {
        DirSource {
            path,
            files: BTreeMap::new(),
            dir_error: None,
            read_once: false,
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What is wrong now, one line per file (and the directory).
    pub fn errors(&self) -> Vec<String> {
        let mut out: Vec<String> = self.dir_error.iter().cloned().collect();
        out.extend(self.files.values().filter_map(|f| f.error.clone()));
        out
    }

    /// Looks at the directory; reads the files that changed. Blocking (run it off the async
    /// threads).
    pub fn poll(&mut self) -> Poll {
        let entries = match std::fs::read_dir(&self.path) {
            Ok(e) => e,
            Err(e) => {
                // Keep what is in force: an unreadable directory is not an empty one.
                self.dir_error = Some(format!("{}: {e}", self.path.display()));
                return Poll::Unchanged;
            }
        };
        self.dir_error = None;
        let mut seen: BTreeMap<String, Signature> = BTreeMap::new();
        for e in entries.flatten() {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if !manifest::is_manifest(&name) {
                continue;
            }
            let Ok(meta) = std::fs::metadata(e.path()) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            seen.insert(name, (meta.len(), meta.modified().ok()));
        }
        let mut changed = !self.read_once;
        self.files.retain(|name, _| {
            let keep = seen.contains_key(name);
            changed |= !keep;
            keep
        });
        for (name, sig) in seen {
            let state = self.files.entry(name.clone()).or_default();
            if state.sig == Some(sig) {
                continue;
            }
            state.sig = Some(sig);
            let path = self.path.join(&name);
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|text| manifest::parse(&name, &text).map_err(|e| e.to_string()));
            match parsed {
                Ok(objects) => {
                    changed |= state.good.as_ref() != Some(&objects) || state.error.is_some();
                    state.good = Some(objects);
                    state.error = None;
                }
                Err(e) => {
                    changed |= state.error.as_ref() != Some(&e);
                    state.error = Some(e);
                }
            }
        }
        self.read_once = true;
        if !changed {
            return Poll::Unchanged;
        }
        Poll::Changed(
            self.files
                .values()
                .filter_map(|f| f.good.as_ref())
                .flatten()
                .cloned()
                .collect(),
        )
    }
}
