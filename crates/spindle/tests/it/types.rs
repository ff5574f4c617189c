//! The type definitions shipped for editors (`types/globals.d.luau`) match what scripts can
//! reach at run time: a name declared there and missing from the runtime, or a public name of
//! the runtime that the file does not declare, fails the test (issue 13).

use std::collections::BTreeSet;

use spindle::mlua::Lua;
use spindle::Scheduler;

const DEFINITIONS: &str = include_str!("../../types/globals.d.luau");

/// The names declared by `declare NAME: { ... }` (its keys) or `declare class NAME ... end`
/// (its fields and methods), from a definitions file.
fn declared(definitions: &str, name: &str) -> BTreeSet<String> {
    let table = format!("declare {name}: {{");
    let class = format!("declare class {name}");
    let mut lines = definitions.lines();
    lines
        .by_ref()
        .find(|line| line.trim_end() == table || line.trim_end() == class)
        .unwrap_or_else(|| panic!("{name} is not declared"));
    let mut names = BTreeSet::new();
    for line in lines {
        let line = line.trim();
        if line == "}" || line == "end" {
            return names;
        }
        if line.starts_with("--") || line.is_empty() {
            continue;
        }
        let line = line.strip_prefix("function ").unwrap_or(line);
        let end = line
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(line.len());
        names.insert(line[..end].to_string());
    }
    panic!("{name}'s declaration does not end");
}

/// What scripts reach at run time: the keys of `task` and `Signal`, and the public fields and
/// methods of a signal and of a connection (names starting with `_` are the library's own).
fn runtime() -> [(&'static str, BTreeSet<String>); 4] {
    let lua = Lua::new();
    let scheduler = Scheduler::new(&lua).unwrap();
    scheduler.install_task_library().unwrap();
    let names = |source: &str| -> BTreeSet<String> {
        let list: Vec<String> = lua.load(source).eval().unwrap();
        list.into_iter().collect()
    };
    let public = r#"
        local function public(object)
            local names = {}
            for key in object do
                if type(key) == "string" and key:sub(1, 1) ~= "_" then
                    table.insert(names, key)
                end
            end
            local index = getmetatable(object) and getmetatable(object).__index
            if type(index) == "table" then
                for key in index do
                    if key:sub(1, 1) ~= "_" then table.insert(names, key) end
                end
            end
            return names
        end
    "#;
    [
        ("task", names(&format!("{public} return public(task)"))),
        ("Signal", names(&format!("{public} return public(Signal)"))),
        (
            "SignalObject",
            names(&format!("{public} return public(Signal.new())")),
        ),
        (
            "SignalConnection",
            names(&format!(
                "{public} return public(Signal.new():Connect(function() end))"
            )),
        ),
    ]
}

#[test]
fn the_editor_definitions_declare_exactly_what_scripts_reach() {
    for (name, at_run_time) in runtime() {
        let in_file = declared(DEFINITIONS, name);
        assert_eq!(
            in_file, at_run_time,
            "{name}: types/globals.d.luau declares the left, scripts reach the right"
        );
    }
}

#[test]
fn a_name_on_one_side_only_is_caught() {
    // The check itself: a definitions file missing `task.cancel` and declaring an extra
    // method does not match.
    let broken = DEFINITIONS
        .replace("\tcancel: (thread: thread) -> (),\n", "")
        .replace(
            "\tfunction DisconnectAll(self): ()\n",
            "\tfunction DisconnectAll(self): ()\n\tfunction Destroy(self): ()\n",
        );
    let [(_, task), _, (_, signal), _] = runtime();
    assert_ne!(declared(&broken, "task"), task);
    assert!(!declared(&broken, "task").contains("cancel"));
    assert!(declared(&broken, "SignalObject").contains("Destroy"));
    assert_ne!(declared(&broken, "SignalObject"), signal);
}
