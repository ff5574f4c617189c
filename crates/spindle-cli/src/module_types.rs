//! The type files that editors read, kept in the repository and built into the binary for
//! `spindle setup`: the globals (`task`, `Signal`) as a luau-lsp definitions file, and one module
//! file per `@spindle/NAME` built-in.
//!
//! A module's types are a Luau module that does nothing (`types/modules/NAME.luau`): luau-lsp
//! resolves `require("@spindle/fs")` through the `@spindle` alias of `.luaurc` to it, as it
//! would any module, and takes the types of what it returns. (A `.d.luau` definitions file can
//! only declare globals.) At run time `require("@spindle/...")` is answered by
//! [`crate::builtins`] before any alias is read, so the files never run.
//!
//! Invariant, checked by this file's tests on every `cargo test`: [`MODULES`] lists every
//! built-in of [`crate::builtins::NAMES`] and every file of `types/modules/`, each file parses
//! as Luau, and each declares exactly the names its module has at run time, with functions
//! declared as functions. A module that gains a function (or a new module) fails the tests
//! until its types say so: add the `function NAME.f(...)` line (or the file and its entry here).

/// The definitions of the globals, for luau-lsp's `types.definitionFiles`.
pub const GLOBALS: &str = include_str!("../../spindle/types/globals.d.luau");

/// Each built-in module's name and its type file.
pub const MODULES: &[(&str, &str)] = &[
    ("fs", include_str!("../types/modules/fs.luau")),
    ("json", include_str!("../types/modules/json.luau")),
    ("net", include_str!("../types/modules/net.luau")),
    ("process", include_str!("../types/modules/process.luau")),
    ("stdio", include_str!("../types/modules/stdio.luau")),
];

/// What a module's type file declares: each public name, and whether it is a function.
///
/// The file's shape: `local NAME = {}`, then `function NAME.f(...)` for functions and
/// `NAME.field = ...` for values, each at the start of a line, and `return NAME` last.
#[cfg(test)]
fn declared(source: &str) -> Result<std::collections::BTreeMap<String, bool>, String> {
    let mut names = std::collections::BTreeMap::new();
    let mut module: Option<String> = None;
    let mut returned = false;
    for (number, line) in source.lines().enumerate() {
        let place = || format!("line {}: {line:?}", number + 1);
        if returned && !line.trim().is_empty() {
            return Err(format!("{}: nothing may follow `return`", place()));
        }
        let Some(table) = module.as_deref() else {
            if let Some(rest) = line.strip_prefix("local ") {
                if let Some(name) = rest.strip_suffix(" = {}") {
                    module = Some(name.to_owned());
                }
            }
            continue;
        };
        if line == format!("return {table}") {
            returned = true;
            continue;
        }
        let (rest, function) = match line.strip_prefix("function ") {
            Some(rest) => (rest, true),
            None => (line, false),
        };
        let Some(rest) = rest.strip_prefix(table).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let (name, after) = rest.split_at(end);
        let well_formed = if function {
            after.starts_with('(')
        } else {
            after.starts_with(" = ")
        };
        if name.is_empty() || !well_formed {
            return Err(format!("{}: not a declaration", place()));
        }
        if names.insert(name.to_owned(), function).is_some() {
            return Err(format!("{}: {name} is declared twice", place()));
        }
    }
    match (module, returned) {
        (None, _) => Err("no `local NAME = {}` line".to_owned()),
        (Some(table), false) => Err(format!("no `return {table}` line at the end")),
        (Some(_), true) => Ok(names),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use spindle::mlua::{self, Lua, Table};
    use spindle::Scheduler;
    use spindle_std::process::{Exit, ProcessInfo};

    use super::*;

    /// Names that iteration does not show, read and written through a module's `__index` and
    /// `__newindex`, each with a value that assigning it takes.
    const BEHIND_METAMETHODS: &[(&str, &str, f64)] = &[("process", "exitCode", 0.0)];

    /// The public names of each built-in as scripts reach them, and whether each is a function:
    /// what `for key, value in module` gives (a module's `__iter` included), and the names of
    /// [`BEHIND_METAMETHODS`] once assigning and reading them back works.
    fn at_run_time(name: &str) -> BTreeMap<String, bool> {
        let also: Vec<(String, f64)> = BEHIND_METAMETHODS
            .iter()
            .filter(|(module, _, _)| *module == name)
            .map(|(_, key, value)| (key.to_string(), *value))
            .collect();
        let lua = Lua::new();
        let scheduler = Scheduler::new(&lua).unwrap();
        scheduler.install_task_library().unwrap();
        lua.set_app_data(ProcessInfo::with_os_args(Vec::new(), Exit::new()));
        let module = crate::builtins::load(name, &scheduler)
            .unwrap_or_else(|| panic!("{name} is not a built-in"))
            .unwrap();
        let list: Table = lua
            .load(
                r#"
                local module, also = ...
                local names = {}
                for key, value in module do
                    if type(key) == "string" and key:sub(1, 1) ~= "_" then
                        names[key] = type(value) == "function"
                    end
                end
                for key, value in also do
                    module[key] = value
                    if module[key] == value then
                        names[key] = false
                    end
                end
                return names
                "#,
            )
            .call((module, lua.create_table_from(also).unwrap()))
            .unwrap();
        list.pairs::<String, bool>()
            .collect::<mlua::Result<_>>()
            .unwrap()
    }

    fn declared_by(name: &str) -> BTreeMap<String, bool> {
        let (_, source) = MODULES.iter().find(|(n, _)| *n == name).unwrap();
        declared(source).unwrap_or_else(|e| panic!("types/modules/{name}.luau: {e}"))
    }

    #[test]
    fn every_built_in_module_has_a_type_file_and_every_type_file_a_module() {
        let listed: BTreeSet<&str> = MODULES.iter().map(|(name, _)| *name).collect();
        let built_in: BTreeSet<&str> = crate::builtins::NAMES.iter().copied().collect();
        assert_eq!(
            listed, built_in,
            "module_types::MODULES against builtins::NAMES"
        );
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("types/modules");
        let files: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let expected: BTreeSet<String> = listed.iter().map(|n| format!("{n}.luau")).collect();
        assert_eq!(files, expected, "the files of {}", dir.display());
    }

    #[test]
    fn type_files_parse_as_luau() {
        let lua = Lua::new();
        for (name, source) in MODULES {
            if let Err(error) = lua.load(*source).set_name(*name).into_function() {
                panic!("types/modules/{name}.luau does not parse: {error}");
            }
        }
    }

    #[test]
    fn type_files_declare_exactly_what_scripts_reach() {
        for (name, _) in MODULES {
            let in_file = declared_by(name);
            let reached = at_run_time(name);
            assert_eq!(
                in_file, reached,
                "@spindle/{name}: types/modules/{name}.luau declares the left (name: is a \
                 function), scripts reach the right"
            );
        }
    }

    #[test]
    fn a_name_on_one_side_only_or_of_the_wrong_kind_is_caught() {
        let (_, fs) = MODULES.iter().find(|(n, _)| *n == "fs").unwrap();
        let reached = at_run_time("fs");
        // A function the runtime has and the file lost.
        let missing = fs.replace("function fs.copy(", "local function copy(");
        assert!(!declared(&missing).unwrap().contains_key("copy"));
        assert_ne!(declared(&missing).unwrap(), reached);
        // A function the file declares and the runtime lacks.
        let extra = fs.replace(
            "return fs",
            "function fs.watch(path: string): () end\n\nreturn fs",
        );
        assert_ne!(declared(&extra).unwrap(), reached);
        // A function declared as a value.
        let value = fs.replace(
            "function fs.isDir(path: string): boolean",
            "fs.isDir = (nil :: any)\nlocal function isDir(path: string): boolean",
        );
        assert_eq!(declared(&value).unwrap().get("isDir"), Some(&false));
        assert_ne!(declared(&value).unwrap(), reached);
    }

    #[test]
    fn a_file_without_the_module_shape_is_refused() {
        assert!(declared("return {}").is_err());
        assert!(declared("local m = {}\nfunction m.f() end\n").is_err());
        assert!(declared("local m = {}\nm.f = 1\nm.f = 2\nreturn m").is_err());
        assert!(declared("local m = {}\nfunction m.f end\nreturn m").is_err());
    }
}
