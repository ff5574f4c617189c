//! `spindle setup [DIR]`: the editor's view of Spindle in a project, as luau-lsp reads it.
//!
//! Writes, under DIR (the current directory by default):
//! - `.spindle/types/globals.d.luau`, the globals (`task`, `Signal`), and
//!   `.spindle/types/modules/NAME.luau` for each `@spindle/NAME` module ([`crate::module_types`]).
//!   These files are Spindle's own: a newer `spindle setup` replaces them.
//! - `.luaurc`: the alias `spindle` -> `.spindle/types/modules`, so that luau-lsp resolves
//!   `require("@spindle/fs")` to its types. (At run time Spindle answers `@spindle/...` itself.)
//! - `.vscode/settings.json` (unless `--no-vscode`): luau-lsp's `types.definitionFiles` gets the
//!   globals file, `platform.type` is `standard` and `sourcemap.enabled` false (no Roblox
//!   project around).
//!
//! The two files the user owns are merged, never clobbered: keys already there are kept, a
//! key Spindle needs that holds another value is a conflict, and a file that is not plain JSON
//! (VS Code allows comments) is refused. On a conflict or a refusal nothing is written and the
//! command says what to change; `--force` backs the file up (`FILE.bak`) and sets the keys.
//! Running it again changes nothing.
//!
//! Invariant: every file is planned (read, merged, checked) before the first one is written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde_json::{Map, Value};

use crate::module_types;

/// Where the type files go, relative to the project.
const GLOBALS_FILE: &str = ".spindle/types/globals.d.luau";
const MODULES_DIR: &str = ".spindle/types/modules";

/// Options of `spindle setup`.
#[derive(Args)]
pub(crate) struct SetupOptions {
    /// The project's directory.
    #[arg(value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    /// Leave `.vscode/settings.json` alone.
    #[arg(long)]
    no_vscode: bool,
    /// Set settings that hold other values, backing the file up as FILE.bak first.
    #[arg(long)]
    force: bool,
}

/// One file to write, and what the command says of it.
struct Planned {
    path: PathBuf,
    contents: String,
    /// Whether a file is there with other contents (and so is "updated").
    replaces: bool,
    /// Whether a backup comes first (`--force` over a conflict).
    backup: bool,
}

/// A key of a user's JSON file, the value Spindle needs there, and what it found.
struct Conflict {
    file: PathBuf,
    key: String,
    found: Value,
    wanted: Value,
}

pub(crate) fn run(options: &SetupOptions) -> ExitCode {
    match plan(options) {
        Ok(files) if files.is_empty() => {
            println!(
                "{}: set up already, nothing to change",
                options.dir.display()
            );
            ExitCode::SUCCESS
        }
        Ok(files) => match write(&files) {
            Ok(()) => {
                println!(
                    "Types set up in {}: open the folder in an editor with luau-lsp.",
                    options.dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("spindle setup: {message}");
                ExitCode::FAILURE
            }
        },
        Err(message) => {
            eprintln!("spindle setup: {message}");
            ExitCode::FAILURE
        }
    }
}

fn plan(options: &SetupOptions) -> Result<Vec<Planned>, String> {
    let dir = &options.dir;
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let mut files = vec![ours(dir.join(GLOBALS_FILE), module_types::GLOBALS)];
    for (name, source) in module_types::MODULES {
        files.push(ours(
            dir.join(MODULES_DIR).join(format!("{name}.luau")),
            source,
        ));
    }
    let mut conflicts = Vec::new();
    let luaurc = dir.join(".luaurc");
    let mut wanted = Map::new();
    wanted.insert(
        "aliases".into(),
        Value::Object(Map::from_iter([(
            "spindle".to_owned(),
            Value::from(MODULES_DIR),
        )])),
    );
    files.push(merged(&luaurc, &wanted, options.force, &mut conflicts)?);
    if !options.no_vscode {
        let settings = dir.join(".vscode/settings.json");
        files.push(merged(
            &settings,
            &vscode_settings(&settings)?,
            options.force,
            &mut conflicts,
        )?);
    }
    if !conflicts.is_empty() {
        let lines: Vec<String> = conflicts
            .iter()
            .map(|c| {
                format!(
                    "  {}: \"{}\" is {}, Spindle needs {}",
                    c.file.display(),
                    c.key,
                    c.found,
                    c.wanted
                )
            })
            .collect();
        return Err(format!(
            "nothing written: settings hold other values\n{}\nchange them, or run again with \
             --force to back the files up (FILE.bak) and set them",
            lines.join("\n")
        ));
    }
    Ok(files
        .into_iter()
        .filter(|f| f.replaces || !f.path.exists() || f.backup)
        .collect())
}

/// One of Spindle's own files: written when missing or different.
fn ours(path: PathBuf, contents: &str) -> Planned {
    let replaces = match std::fs::read_to_string(&path) {
        Ok(old) => old != contents,
        Err(_) => false,
    };
    Planned {
        path,
        contents: contents.to_owned(),
        replaces,
        backup: false,
    }
}

/// The settings luau-lsp needs in VS Code. `types.definitionFiles` takes the map form
/// (`{"@spindle": path}`) in a new file, and an existing array form gets the path added.
fn vscode_settings(path: &Path) -> Result<Map<String, Value>, String> {
    let existing = read_json(path)?.unwrap_or_default();
    let definitions = match existing.get("luau-lsp.types.definitionFiles") {
        Some(Value::Array(paths)) => {
            let mut paths = paths.clone();
            if !paths.contains(&Value::from(GLOBALS_FILE)) {
                paths.push(Value::from(GLOBALS_FILE));
            }
            Value::Array(paths)
        }
        _ => Value::Object(Map::from_iter([(
            "@spindle".to_owned(),
            Value::from(GLOBALS_FILE),
        )])),
    };
    Ok(Map::from_iter([
        ("luau-lsp.platform.type".to_owned(), Value::from("standard")),
        ("luau-lsp.sourcemap.enabled".to_owned(), Value::from(false)),
        ("luau-lsp.types.definitionFiles".to_owned(), definitions),
    ]))
}

/// A JSON object file, `None` when there is none; refused when it is not a JSON object.
fn read_json(path: &Path) -> Result<Option<Map<String, Value>>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if text.trim().is_empty() {
        return Ok(Some(Map::new()));
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(format!(
            "{} is not a JSON object; nothing written",
            path.display()
        )),
        Err(e) => Err(format!(
            "cannot merge into {} ({e}; comments and trailing commas are not read); nothing \
             written. Add these settings yourself, or use --no-vscode for the editor's file",
            path.display()
        )),
    }
}

/// `wanted` merged into the JSON object file at `path`: objects key by key (their other keys
/// kept), other values set where missing, and a conflict recorded (or, with `force`,
/// overridden after a backup) where the file holds another value.
fn merged(
    path: &Path,
    wanted: &Map<String, Value>,
    force: bool,
    conflicts: &mut Vec<Conflict>,
) -> Result<Planned, String> {
    let existing = read_json(path)?;
    let exists = existing.is_some();
    let mut object = existing.clone().unwrap_or_default();
    let mut clashed = Vec::new();
    merge_into(&mut object, wanted, "", &mut clashed);
    let backup = !clashed.is_empty() && force;
    if !force {
        conflicts.extend(clashed.into_iter().map(|(key, found, wanted)| Conflict {
            file: path.to_owned(),
            key,
            found,
            wanted,
        }));
    }
    let changed = existing.as_ref() != Some(&object);
    let mut contents = serde_json::to_string_pretty(&Value::Object(object))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    contents.push('\n');
    Ok(Planned {
        path: path.to_owned(),
        contents,
        replaces: exists && changed,
        backup,
    })
}

/// Sets `wanted`'s keys in `object`; a key holding another value is set too, and listed in
/// `clashed` (with its dotted path, the value found and the one wanted). Alias names compare
/// without case, as Luau's do.
fn merge_into(
    object: &mut Map<String, Value>,
    wanted: &Map<String, Value>,
    prefix: &str,
    clashed: &mut Vec<(String, Value, Value)>,
) {
    for (key, value) in wanted {
        let existing_key = object
            .keys()
            .find(|k| *k == key || (prefix == "aliases." && k.eq_ignore_ascii_case(key)))
            .cloned();
        let name = format!("{prefix}{key}");
        match (existing_key, value) {
            (None, _) => {
                object.insert(key.clone(), value.clone());
            }
            (Some(found), Value::Object(inner)) => match object.get_mut(&found) {
                Some(Value::Object(existing)) => {
                    merge_into(existing, inner, &format!("{name}."), clashed)
                }
                Some(other) => {
                    clashed.push((name, other.clone(), value.clone()));
                    object.insert(found, value.clone());
                }
                None => unreachable!("the key was found"),
            },
            // An array that `wanted` extends (a path added to the user's list) is no clash.
            (Some(found), Value::Array(more)) if matches!(&object[&found], Value::Array(had) if had.iter().all(|v| more.contains(v))) =>
            {
                object.insert(found, value.clone());
            }
            (Some(found), _) => {
                if object[&found] != *value {
                    clashed.push((name, object[&found].clone(), value.clone()));
                    object.insert(found, value.clone());
                }
            }
        }
    }
}

fn write(files: &[Planned]) -> Result<(), String> {
    for file in files {
        if let Some(parent) = file.path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        if file.backup {
            let mut backup = file.path.clone().into_os_string();
            backup.push(".bak");
            std::fs::copy(&file.path, &backup)
                .map_err(|e| format!("cannot back up {}: {e}", file.path.display()))?;
            println!(
                "backed up {} as {}",
                file.path.display(),
                PathBuf::from(&backup).display()
            );
        }
        std::fs::write(&file.path, &file.contents)
            .map_err(|e| format!("cannot write {}: {e}", file.path.display()))?;
        let verb = if file.replaces { "updated" } else { "wrote" };
        println!("{verb} {}", file.path.display());
    }
    Ok(())
}
