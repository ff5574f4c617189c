//! The programs the suite runs: the release `spindle` binary from this checkout, this executable
//! as the floors' plain VM, and `lune` when it is on `PATH`.
//!
//! The suite builds nothing at run time, so it must not measure a stale `spindle`: the binary is
//! taken from this executable's own directory (the same target directory and profile), and it is
//! refused when any source file that cargo's dep-info (`spindle.d`) lists for it is newer than the
//! binary, or lies outside this checkout.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// How to build the binary that [`spindle_binary`] looks for.
pub const BUILD_SPINDLE: &str = "cargo build --release -p spindle-cli";

/// This checkout's root (the workspace directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the crate sits at crates/spindle-bench")
        .to_path_buf()
}

/// The `spindle` binary next to this executable, checked to be built from this checkout's
/// current sources.
pub fn spindle_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::new(format!("cannot find this executable's path: {e}")))?;
    let dir = exe.parent().expect("an executable lives in a directory");
    let binary = dir.join("spindle");
    if !binary.is_file() {
        return Err(Error::new(format!(
            "{} does not exist: run `{BUILD_SPINDLE}` first",
            binary.display()
        )));
    }
    let dep_info = dir.join("spindle.d");
    let text = std::fs::read_to_string(&dep_info).map_err(|e| {
        Error::new(format!(
            "cannot read {} ({e}), so cannot tell whether {} is up to date: run `{BUILD_SPINDLE}`",
            dep_info.display(),
            binary.display()
        ))
    })?;
    check_fresh(&binary, &dep_sources(&text), &workspace_root())?;
    Ok(binary)
}

/// Refuses `binary` if a source is newer than it, missing, or outside `checkout`.
pub fn check_fresh(binary: &Path, sources: &[PathBuf], checkout: &Path) -> Result<()> {
    let built = modified(binary)?;
    let stale = |why: String| {
        Err(Error::new(format!(
            "{} is stale: {why}; run `{BUILD_SPINDLE}`",
            binary.display()
        )))
    };
    if sources.is_empty() {
        return stale("its dep-info lists no sources".into());
    }
    for source in sources {
        if !source.starts_with(checkout) {
            return stale(format!(
                "it was built from {}, not from this checkout ({})",
                source.display(),
                checkout.display()
            ));
        }
        match modified(source) {
            Ok(changed) if changed > built => {
                return stale(format!("{} changed after it was built", source.display()))
            }
            Ok(_) => {}
            Err(_) => return stale(format!("{} no longer exists", source.display())),
        }
    }
    Ok(())
}

fn modified(path: &Path) -> Result<std::time::SystemTime> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| Error::new(format!("cannot read the time of {}: {e}", path.display())))
}

/// The sources listed in a cargo dep-info file (`target: source source ...`, with spaces in
/// paths escaped as `\ `).
pub fn dep_sources(dep_info: &str) -> Vec<PathBuf> {
    let Some(first_line) = dep_info.lines().next() else {
        return Vec::new();
    };
    let mut rest = first_line;
    // The target path ends at the first unescaped ": ".
    let mut escaped = false;
    for (at, c) in first_line.char_indices() {
        if c == ':' && !escaped && first_line[at + 1..].starts_with(' ') {
            rest = &first_line[at + 1..];
            break;
        }
        escaped = c == '\\' && !escaped;
    }
    let mut sources = Vec::new();
    let mut current = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => current.push(next),
                None => current.push('\\'),
            },
            ' ' => {
                if !current.is_empty() {
                    sources.push(PathBuf::from(std::mem::take(&mut current)));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        sources.push(PathBuf::from(current));
    }
    sources
}

/// `name` on `PATH`, if there is an executable file by that name.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The arguments that make this executable run a script on the plain VM (see `plain_vm`).
pub fn plain_vm_args(script: &Path) -> Vec<&OsStr> {
    vec![OsStr::new(PLAIN_VM_COMMAND), script.as_os_str()]
}

/// The hidden subcommand of `spindle-bench` that runs a script on the plain VM.
pub const PLAIN_VM_COMMAND: &str = "plain-vm";

/// The hidden subcommand of `spindle-bench` that runs frame_10k's game loop through the library
/// ([`crate::frame_loop`]).
pub const FRAME_LOOP_COMMAND: &str = "frame-loop";

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn dep_info_lists_the_sources_after_the_target() {
        let text = "/t/release/spindle: /w/a.rs /w/src/b\\ c.rs /w/task.luau\n\n/w/a.rs:\n";
        assert_eq!(
            dep_sources(text),
            [
                PathBuf::from("/w/a.rs"),
                PathBuf::from("/w/src/b c.rs"),
                PathBuf::from("/w/task.luau")
            ]
        );
        assert!(dep_sources("").is_empty());
        assert_eq!(
            dep_sources("/my\\ target/spindle: /w/x.rs"),
            [PathBuf::from("/w/x.rs")]
        );
    }

    /// A scratch directory with a "binary" and a "source" whose times the test sets.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("spindle-bench-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn touch(path: &Path, at: SystemTime) {
        let file = std::fs::File::create(path).unwrap();
        file.set_modified(at).unwrap();
    }

    #[test]
    fn a_binary_older_than_a_source_is_refused_with_the_build_command() {
        let dir = scratch("stale");
        let now = SystemTime::now();
        touch(&dir.join("spindle"), now - Duration::from_secs(60));
        touch(&dir.join("lib.rs"), now);
        let error = check_fresh(&dir.join("spindle"), &[dir.join("lib.rs")], &dir).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("lib.rs changed after it was built"),
            "{message}"
        );
        assert!(message.contains(BUILD_SPINDLE), "{message}");

        touch(&dir.join("spindle"), now + Duration::from_secs(1));
        assert_eq!(
            check_fresh(&dir.join("spindle"), &[dir.join("lib.rs")], &dir),
            Ok(())
        );
    }

    #[test]
    fn a_binary_built_from_another_checkout_is_refused() {
        let dir = scratch("foreign");
        touch(&dir.join("spindle"), SystemTime::now());
        let elsewhere = PathBuf::from("/elsewhere/crates/spindle/src/lib.rs");
        let error = check_fresh(&dir.join("spindle"), &[elsewhere], &dir).unwrap_err();
        assert!(
            error.to_string().contains("not from this checkout"),
            "{error}"
        );
        let error = check_fresh(&dir.join("spindle"), &[], &dir).unwrap_err();
        assert!(error.to_string().contains("no sources"), "{error}");
    }

    #[test]
    fn the_workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }
}
