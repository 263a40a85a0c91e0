//! Where a command writes its results: a directory that is new or empty, or one the user said may
//! be replaced (`--force`) or continued (`--resume`, whose arguments the training loop checks).
//! Earlier work is never overwritten or mixed with new work without a word.

use crate::validation::BadInput;
use anyhow::{Context, Result};
use std::path::Path;

/// What to do with an output directory that already holds something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Refuse (the default).
    Refuse,
    /// `--force`: replace it, if it is flashctl's own output.
    Replace,
    /// `--resume`: continue the run in it (the loop refuses different arguments).
    Continue,
}

impl Existing {
    pub fn from_flags(force: bool, resume: bool) -> Existing {
        match (force, resume) {
            (_, true) => Existing::Continue,
            (true, false) => Existing::Replace,
            (false, false) => Existing::Refuse,
        }
    }
}

/// Files that mark a directory as something flashctl wrote (a model, student, export, bundle,
/// pairs set, bench or eval report): what `--force` may remove.
const FLASHCTL_MARKERS: &[&str] = &[
    "config.json",
    "manifest.json",
    "train_state.json",
    "index.json",
    "bench.json",
    "eval.json",
    "featurenet.json",
    "summary.json",
];

/// Files that mark a model (teacher, student), a training run in progress or a pairs set: the
/// inputs that exports and reports are never mixed into.
pub const MODEL_OR_PAIRS_MARKERS: &[&str] = &["config.json", "train_state.json", "index.json"];

/// What a non-empty directory holds, for the refusal message.
pub fn describe(dir: &Path) -> String {
    let read = |f: &str| -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(dir.join(f)).ok()?).ok()
    };
    if let Some(c) = read("config.json") {
        let role = c["role"].as_str().unwrap_or("model");
        return format!("a {role} model (config.json)");
    }
    if let Some(m) = read("manifest.json") {
        return if m.get("engines").is_some() {
            "a deployment bundle (manifest.json)".into()
        } else {
            "an export (manifest.json)".into()
        };
    }
    if let Some(f) = FLASHCTL_MARKERS.iter().find(|f| dir.join(f).exists()) {
        return format!("earlier flashctl output ({f})");
    }
    let n = std::fs::read_dir(dir).map(|r| r.count()).unwrap_or(0);
    format!("{n} other entries")
}

fn is_flashctl_output(dir: &Path) -> bool {
    FLASHCTL_MARKERS.iter().any(|f| dir.join(f).exists())
}

/// Make `dir` ready to be written by a command whose output flag is `flag`: refuse a file, a
/// non-empty directory (unless `existing` says replace or continue) or a replace of anything
/// flashctl did not write; `--force` removes the earlier output. Creates nothing; the command
/// creates the directory when it writes.
pub fn prepare(dir: &Path, flag: &str, existing: Existing) -> Result<()> {
    if check(dir, flag, existing)? && existing == Existing::Replace {
        std::fs::remove_dir_all(dir).with_context(|| {
            format!("--force: removing the earlier output in {}", dir.display())
        })?;
    }
    Ok(())
}

/// [`prepare`]'s checks without the removal, for commands that build beside and swap in
/// (`build`). Returns whether `dir` holds earlier flashctl output.
pub fn check(dir: &Path, flag: &str, existing: Existing) -> Result<bool> {
    let shown = dir.display();
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if existing == Existing::Continue {
                return Err(BadInput(format!(
                    "--resume: {shown} does not exist (nothing to continue)"
                ))
                .into());
            }
            return Ok(false);
        }
        Err(e) => return Err(e).with_context(|| format!("{flag} {shown}")),
    };
    if !meta.is_dir() {
        return Err(BadInput(format!("{flag} {shown}: exists and is not a directory")).into());
    }
    let empty = std::fs::read_dir(dir)
        .with_context(|| format!("{flag} {shown}: reading the directory"))?
        .next()
        .is_none();
    if empty {
        return Ok(false);
    }
    match existing {
        Existing::Continue => Ok(true),
        Existing::Refuse => Err(BadInput(format!(
            "{flag} {shown} already holds {}: pass --force to replace it, or choose another {flag}",
            describe(dir)
        ))
        .into()),
        Existing::Replace if is_flashctl_output(dir) => Ok(true),
        Existing::Replace => Err(BadInput(format!(
            "{flag} {shown} holds {} and nothing flashctl wrote: --force replaces only flashctl's \
             own output; choose a new or empty {flag}",
            describe(dir)
        ))
        .into()),
    }
}

/// Make `dir` ready for a report (`bench --out`, `eval --out`): a file is refused, and so is a
/// model, export, bundle or pairs directory (a report never mixes into its input); an earlier
/// report of the same kind is replaced file by file.
pub fn prepare_report(dir: &Path, flag: &str) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(BadInput(format!(
            "{flag} {}: exists and is not a directory",
            dir.display()
        ))
        .into());
    }
    let inputs = [
        "config.json",
        "manifest.json",
        "train_state.json",
        "index.json",
    ];
    if inputs.iter().any(|f| dir.join(f).exists()) {
        return Err(BadInput(format!(
            "{flag} {} holds {}: a report is not written into it; choose another {flag}",
            dir.display(),
            describe(dir)
        ))
        .into());
    }
    Ok(())
}

/// Removes a scratch directory when dropped, on success and on every error path alike.
pub struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    /// A fresh directory under the system temp dir, named for `what` and this process.
    pub fn new(what: &str) -> Result<ScratchDir> {
        let d = std::env::temp_dir().join(format!("flashctl-{what}.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(ScratchDir(d))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_and_empty_directories_are_accepted_and_others_refused_unless_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let new = tmp.path().join("new");
        prepare(&new, "--out", Existing::Refuse).unwrap();
        assert!(!new.exists(), "prepare creates nothing");
        std::fs::create_dir(&new).unwrap();
        prepare(&new, "--out", Existing::Refuse).unwrap();

        let model = tmp.path().join("model");
        std::fs::create_dir(&model).unwrap();
        std::fs::write(model.join("config.json"), r#"{"role":"teacher"}"#).unwrap();
        let e = prepare(&model, "--out", Existing::Refuse).unwrap_err();
        assert!(e.to_string().contains("a teacher model"), "{e}");
        assert!(e.to_string().contains("--force"), "{e}");
        prepare(&model, "--out", Existing::Continue).unwrap();
        assert!(model.join("config.json").exists());
        prepare(&model, "--out", Existing::Replace).unwrap();
        assert!(!model.exists(), "--force removes the earlier output");

        let other = tmp.path().join("home");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("thesis.tex"), "keep me").unwrap();
        let e = prepare(&other, "--out", Existing::Replace).unwrap_err();
        assert!(e.to_string().contains("nothing flashctl wrote"), "{e}");
        assert!(other.join("thesis.tex").exists());

        let file = tmp.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let e = prepare(&file, "--out", Existing::Replace).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        let e = prepare(&tmp.path().join("gone"), "--out", Existing::Continue).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn a_scratch_directory_is_removed_on_drop() {
        let p = {
            let s = ScratchDir::new("unit-test").unwrap();
            std::fs::write(s.path().join("x"), "y").unwrap();
            s.path().to_path_buf()
        };
        assert!(!p.exists());
    }
}
