//! Runs every `scripts/*.luau` under a virtual clock and compares what it prints, and the
//! errors it reports, with the checked-in `scripts/*.out`.
//!
//! Each script runs twice against its `.out`: compiled to native code (where Luau supports it)
//! and on Luau's interpreter alone (`SchedulerBuilder::native_code(false)`), which must not
//! differ in any line. Each also runs with every resumption forced onto mlua's general path
//! (`SchedulerBuilder::general_path_only`): the raw lanes exist for speed only, so the output
//! and the trace must be the same both ways.
//!
//! The virtual clock jumps to the next deadline whenever nothing is ready, so waits are exact
//! (`task.wait(2)` returns 2) and the order of events is the same on every run. Reported errors
//! appear in the output as `error: <message>` at the point they were reported.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::path::Path;
use std::rc::Rc;

use spindle::mlua::{Function, Lua, MultiValue};
use spindle::{Clock, Scheduler, Trace, VirtualClock};

/// What the script printed and reported, and the trace of its run; `general` forces every
/// resumption onto mlua's general path, and `native` compiles the script to native code.
fn run_script(path: &Path, general: bool, native: bool) -> (String, Trace) {
    let output = Rc::new(RefCell::new(String::new()));
    let lua = Lua::new();
    let errors = Rc::clone(&output);
    let mut builder = Scheduler::builder()
        .native_code(native)
        .clock(Clock::from(VirtualClock::new()))
        .on_error(move |_, error| {
            writeln!(errors.borrow_mut(), "error: {}", error.message).unwrap()
        });
    if general {
        builder = builder.general_path_only();
    }
    let scheduler = builder.build(&lua).unwrap();
    scheduler.start_trace();
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
    (result, scheduler.take_trace())
}

fn scripts() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts");
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "luau"))
        .collect();
    scripts.sort();
    assert!(!scripts.is_empty(), "no scripts in {}", dir.display());
    scripts
}

#[test]
fn luau_scripts_print_their_expected_output_in_native_code_and_on_the_interpreter() {
    let mut failures = String::new();
    for script in &scripts() {
        let expected_path = script.with_extension("out");
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("missing {}", expected_path.display()));
        for native in [true, false] {
            let (actual, _) = run_script(script, false, native);
            if actual != expected {
                let how = if native { "native code" } else { "interpreter" };
                writeln!(
                    failures,
                    "--- {} ({how})\nexpected:\n{expected}\nactual:\n{actual}",
                    script.display()
                )
                .unwrap();
            }
        }
    }
    assert!(
        failures.is_empty(),
        "scripts differ from their .out files:\n{failures}"
    );
}

#[test]
fn luau_scripts_run_the_same_on_the_general_path_as_on_the_raw_lanes() {
    let mut failures = String::new();
    let mut lanes_taken = 0;
    for script in &scripts() {
        let (fast, fast_trace) = run_script(script, false, true);
        let (general, general_trace) = run_script(script, true, true);
        if general != fast {
            writeln!(
                failures,
                "--- {}
raw lanes:
{fast}
general path:
{general}",
                script.display()
            )
            .unwrap();
        }
        let (fast_trace, general_trace): (Vec<_>, Vec<_>) = (
            fast_trace.into_iter().collect(),
            general_trace.into_iter().collect(),
        );
        if general_trace != fast_trace {
            let at = fast_trace
                .iter()
                .zip(&general_trace)
                .position(|(a, b)| a != b)
                .unwrap_or(fast_trace.len().min(general_trace.len()));
            writeln!(
                failures,
                "--- {}: traces differ from event {at}:
raw lanes: {:?}
general path: {:?}",
                script.display(),
                fast_trace.get(at),
                general_trace.get(at)
            )
            .unwrap();
        }
        lanes_taken += usize::from(!fast_trace.is_empty());
    }
    assert!(failures.is_empty(), "{failures}");
    assert!(lanes_taken > 0, "no script was traced");
}
