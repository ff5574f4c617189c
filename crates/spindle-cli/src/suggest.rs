//! "Did you mean": the existing `.luau` file closest to a path that is not there, for
//! `spindle run`'s message. Only the directory the path names (or the current one) is looked
//! at, not its subdirectories, so that a typo in a big tree costs one directory listing.

use std::path::{Path, PathBuf};

/// The `.luau` file in `missing`'s directory whose name is closest to `missing`'s (by edit
/// distance, also against the name without `.luau`, so that `main` finds `main.luau`), when it
/// is close enough to be the one meant: at most a third of the name's length apart, and 1 at
/// least.
pub fn closest_luau_file(missing: &Path) -> Option<PathBuf> {
    let name = missing.file_name()?.to_str()?;
    let parent = missing.parent().filter(|p| !p.as_os_str().is_empty());
    let entries = std::fs::read_dir(parent.unwrap_or(Path::new("."))).ok()?;
    let limit = (name.chars().count() / 3).max(1);
    let (distance, best) = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let candidate = entry.file_name().into_string().ok()?;
            let stem = candidate.strip_suffix(".luau")?;
            if !entry.file_type().ok()?.is_file() {
                return None;
            }
            let distance =
                strsim::levenshtein(name, &candidate).min(strsim::levenshtein(name, stem));
            Some((distance, candidate))
        })
        .min()?;
    (distance <= limit).then(|| match parent {
        Some(parent) => parent.join(best),
        None => PathBuf::from(best),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(test: &str, files: &[&str]) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("spindle-suggest-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub.luau")).unwrap();
        for file in files {
            std::fs::write(dir.join(file), "").unwrap();
        }
        dir
    }

    #[test]
    fn a_typo_or_a_missing_extension_finds_the_file() {
        let dir = dir_with("typo", &["main.luau", "server.luau", "notes.txt"]);
        assert_eq!(
            closest_luau_file(&dir.join("mian.luau")),
            Some(dir.join("main.luau"))
        );
        assert_eq!(
            closest_luau_file(&dir.join("main")),
            Some(dir.join("main.luau"))
        );
        assert_eq!(
            closest_luau_file(&dir.join("srever.luau")),
            Some(dir.join("server.luau"))
        );
    }

    #[test]
    fn nothing_close_and_what_is_not_a_luau_file_are_not_suggested() {
        let dir = dir_with("far", &["main.luau", "notes.txt"]);
        assert_eq!(
            closest_luau_file(&dir.join("completely-different.luau")),
            None
        );
        assert_eq!(closest_luau_file(&dir.join("notes.tx")), None);
        // A directory named like a script is not one.
        assert_eq!(closest_luau_file(&dir.join("sub.lua")), None);
        assert_eq!(closest_luau_file(&dir.join("missing-dir/main.luau")), None);
    }
}
