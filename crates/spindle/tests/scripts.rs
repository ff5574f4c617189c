//! Runs every `scripts/*.luau` under a virtual clock and compares what it prints, and the
//! errors it reports, with the checked-in `scripts/*.out`.
//!
//! The virtual clock jumps to the next deadline whenever nothing is ready, so waits are exact
//! (`task.wait(2)` returns 2) and the order of events is the same on every run. Reported errors
//! appear in the output as `error: <message>` at the point they were reported.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::path::Path;
use std::rc::Rc;

use spindle::mlua::{Function, Lua, MultiValue};
use spindle::{Clock, Scheduler, VirtualClock};

fn run_script(path: &Path) -> String {
    let output = Rc::new(RefCell::new(String::new()));
    let lua = Lua::new();
    let errors = Rc::clone(&output);
    let scheduler = Scheduler::builder()
        .clock(Clock::from(VirtualClock::new()))
        .on_error(move |error| writeln!(errors.borrow_mut(), "error: {}", error.message).unwrap())
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();

    let tostring: Function = lua.globals().get("tostring").unwrap();
    let printed = Rc::clone(&output);
    let print = lua
        .create_function(move |_, values: MultiValue| {
            let mut line = Vec::new();
            for value in values {
                line.push(tostring.call::<String>(value)?);
            }
            writeln!(printed.borrow_mut(), "{}", line.join("\t")).unwrap();
            Ok(())
        })
        .unwrap();
    lua.globals().set("print", print).unwrap();

    let name = path.file_name().unwrap().to_string_lossy();
    let source = std::fs::read_to_string(path).unwrap();
    let main = lua
        .load(source)
        .set_name(format!("@{name}"))
        .into_function()
        .unwrap();
    scheduler.spawn(main, ()).unwrap();
    scheduler.run_blocking().unwrap();
    let result = output.borrow().clone();
    result
}

#[test]
fn luau_scripts_print_their_expected_output() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts");
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "luau"))
        .collect();
    scripts.sort();
    assert!(!scripts.is_empty(), "no scripts in {}", dir.display());

    let mut failures = String::new();
    for script in &scripts {
        let expected_path = script.with_extension("out");
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("missing {}", expected_path.display()));
        let actual = run_script(script);
        if actual != expected {
            writeln!(
                failures,
                "--- {}\nexpected:\n{expected}\nactual:\n{actual}",
                script.display()
            )
            .unwrap();
        }
    }
    assert!(
        failures.is_empty(),
        "scripts differ from their .out files:\n{failures}"
    );
}
