//! The benchmark suite's workload scripts (crates/spindle-bench/scripts) run under `spindle run`
//! and print the line the suite's runner accepts, at small counts. The floors are plain Luau and
//! run here too: Spindle keeps the `coroutine` library's meaning (contract rule 13).

use std::process::Command;

use spindle_bench::workload::{Script, COMPUTE_SCRIPTS, PLAIN_SCRIPTS, SCHEDULER_SCRIPTS};

fn run_and_verify(script: &Script, count: u64) {
    run_with_and_verify(&[], script, count);
}

fn run_with_and_verify(options: &[&str], script: &Script, count: u64) {
    let out = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .arg("run")
        .args(options)
        .arg(script.path())
        .arg(count.to_string())
        .output()
        .expect("the spindle binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} {count}: {stderr}", script.file);
    assert!(stderr.is_empty(), "{} {count}: {stderr}", script.file);
    script
        .verify(count, &String::from_utf8_lossy(&out.stdout))
        .unwrap();
}

#[test]
fn every_scheduler_workload_script_prints_its_checksum_under_spindle_run() {
    for script in SCHEDULER_SCRIPTS {
        for count in [1, 37, 500] {
            run_and_verify(script, count);
        }
    }
}

#[test]
fn every_floor_script_prints_the_same_checksum_as_its_workload() {
    for script in PLAIN_SCRIPTS {
        for count in [1, 37, 500] {
            run_and_verify(script, count);
        }
    }
}

#[test]
fn every_compute_script_prints_its_checksum_in_native_code_and_on_the_interpreter() {
    // The checksums are worked out in Rust with the scripts' arithmetic: the same line from
    // native code, the interpreter and the formula.
    for (script, counts) in
        COMPUTE_SCRIPTS
            .into_iter()
            .zip([[1, 2, 10, 20], [1, 2, 37, 120], [1, 3, 37, 500]])
    {
        for count in counts {
            run_with_and_verify(&[], script, count);
            run_with_and_verify(&["--no-native"], script, count);
        }
    }
}

#[test]
fn a_workload_that_did_not_finish_its_work_is_rejected() {
    // The runner's check is what makes a broken run fail: a smaller count's line is not accepted.
    let spawn_wait = SCHEDULER_SCRIPTS[0];
    let out = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .arg("run")
        .arg(spawn_wait.path())
        .arg("10")
        .output()
        .unwrap();
    assert!(spawn_wait
        .verify(11, &String::from_utf8_lossy(&out.stdout))
        .is_err());
}
