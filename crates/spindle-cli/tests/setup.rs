//! `spindle setup`: the type files and the editor's settings written into a project, merged
//! with what the user has, refused on a conflict, and the same on a second run.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use support::{spindle_within, text, tree};

fn setup(dir: &Path, options: &[&str]) -> std::process::Output {
    let args: Vec<&str> = ["setup"].iter().chain(options).copied().collect();
    spindle_within(Duration::from_secs(60), &args, dir).expect("spindle setup ends")
}

fn json_file(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_fresh_project_gets_the_types_the_alias_and_the_editor_settings() {
    let dir = tree("setup-fresh", &[]);
    let out = setup(&dir, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let globals = std::fs::read_to_string(dir.join(".spindle/types/globals.d.luau")).unwrap();
    assert!(globals.contains("declare task: {"));
    for name in ["fs", "json", "net", "process", "stdio"] {
        let module = dir.join(format!(".spindle/types/modules/{name}.luau"));
        assert!(std::fs::read_to_string(&module)
            .unwrap()
            .contains(&format!("return {name}")));
    }
    assert_eq!(
        json_file(&dir.join(".luaurc")),
        json!({ "aliases": { "spindle": ".spindle/types/modules" } })
    );
    assert_eq!(
        json_file(&dir.join(".vscode/settings.json")),
        json!({
            "luau-lsp.platform.type": "standard",
            "luau-lsp.sourcemap.enabled": false,
            "luau-lsp.types.definitionFiles": { "@spindle": ".spindle/types/globals.d.luau" },
        })
    );
}

#[test]
fn a_second_run_changes_nothing() {
    let dir = tree("setup-twice", &[]);
    assert!(setup(&dir, &[]).status.success());
    let before = std::fs::read_to_string(dir.join(".vscode/settings.json")).unwrap();
    let again = setup(&dir, &[]);
    assert!(again.status.success());
    assert!(
        text(&again.stdout).contains("nothing to change"),
        "{}",
        text(&again.stdout)
    );
    assert!(!text(&again.stdout).contains("wrote"));
    assert_eq!(
        std::fs::read_to_string(dir.join(".vscode/settings.json")).unwrap(),
        before
    );
}

#[test]
fn the_users_settings_are_kept_and_extended() {
    let dir = tree(
        "setup-merge",
        &[
            (
                ".luaurc",
                r#"{"languageMode": "strict", "aliases": {"lib": "src/lib"}}"#,
            ),
            (
                ".vscode/settings.json",
                r#"{"editor.tabSize": 4, "luau-lsp.types.definitionFiles": ["other.d.luau"]}"#,
            ),
        ],
    );
    let out = setup(&dir, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let luaurc = json_file(&dir.join(".luaurc"));
    assert_eq!(
        luaurc,
        json!({
            "languageMode": "strict",
            "aliases": { "lib": "src/lib", "spindle": ".spindle/types/modules" },
        })
    );
    let settings = json_file(&dir.join(".vscode/settings.json"));
    assert_eq!(settings["editor.tabSize"], 4);
    assert_eq!(
        settings["luau-lsp.types.definitionFiles"],
        json!(["other.d.luau", ".spindle/types/globals.d.luau"])
    );
    // The user's keys keep their place at the top.
    let written = std::fs::read_to_string(dir.join(".vscode/settings.json")).unwrap();
    assert!(written.find("editor.tabSize") < written.find("luau-lsp.platform.type"));
}

#[test]
fn a_conflicting_setting_is_refused_and_nothing_is_written_unless_forced() {
    let original = r#"{"aliases": {"Spindle": "elsewhere"}}"#;
    let dir = tree("setup-conflict", &[(".luaurc", original)]);
    let out = setup(&dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("aliases.spindle"), "{stderr}");
    assert!(stderr.contains("\"elsewhere\""), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.join(".luaurc")).unwrap(),
        original
    );
    assert!(!dir.join(".spindle").exists());
    assert!(!dir.join(".vscode").exists());

    let forced = setup(&dir, &["--force"]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert_eq!(
        std::fs::read_to_string(dir.join(".luaurc.bak")).unwrap(),
        original
    );
    assert_eq!(
        json_file(&dir.join(".luaurc")),
        json!({ "aliases": { "Spindle": ".spindle/types/modules" } })
    );
}

#[test]
fn settings_with_comments_are_refused_and_no_vscode_leaves_them_alone() {
    let settings = "{\n  // mine\n  \"editor.tabSize\": 2\n}\n";
    let dir = tree("setup-jsonc", &[(".vscode/settings.json", settings)]);
    let out = setup(&dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--no-vscode"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.join(".luaurc").exists());

    let out = setup(&dir, &["--no-vscode"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.join(".luaurc").exists());
    assert_eq!(
        std::fs::read_to_string(dir.join(".vscode/settings.json")).unwrap(),
        settings
    );
}

#[test]
fn scripts_of_a_set_up_project_still_run() {
    // The alias is the editor's: at run time `@spindle/...` is Spindle's, and the project's
    // own aliases go on working.
    let dir = tree(
        "setup-run",
        &[
            (".luaurc", r#"{"aliases": {"lib": "src"}}"#),
            ("src/util.luau", "return { twice = function(n) return n * 2 end }"),
            (
                "main.luau",
                "local json = require(\"@spindle/json\")\nlocal util = require(\"@lib/util\")\nprint(json.encode({ util.twice(21) }))",
            ),
        ],
    );
    assert!(setup(&dir, &[]).status.success());
    let out = spindle_within(Duration::from_secs(60), &["run", "main.luau"], &dir).unwrap();
    assert_eq!(text(&out.stdout), "[42]\n", "{}", text(&out.stderr));
}

#[test]
fn a_directory_that_is_not_there_is_refused() {
    let dir = tree("setup-missing", &[]);
    let out = setup(&dir, &["no/such/dir"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a directory"));
}
