//! The workload scripts (in `crates/spindle-bench/scripts/`) and the one line each must print.
//!
//! Every script takes its count as its first argument and prints exactly one line, `done ...`,
//! once all of its work has run; the line holds a count or checksum that only a complete run
//! produces. [`Script::verify`] is the only way a run's output is accepted.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One workload script.
#[derive(Debug)]
pub struct Script {
    /// The file name, in [`scripts_dir`].
    pub file: &'static str,
    expected: fn(u64) -> String,
}

/// `done COUNT SUM` with SUM = 1 + ... + COUNT: each of COUNT tasks added its index once.
fn count_and_index_sum(count: u64) -> String {
    format!("done {count} {}", count * (count + 1) / 2)
}

/// `done COUNT COUNT`: COUNT calls of one function, each counted once.
fn count_and_calls(count: u64) -> String {
    format!("done {count} {count}")
}

/// `done TASKS WAITS` with WAITS = TASKS * 100: every task waited its 100 rounds.
fn tasks_and_waits(tasks: u64) -> String {
    format!("done {tasks} {}", tasks * WAIT_ROUNDS)
}

/// `done COUNT SUM` with SUM = COUNT * (COUNT + 1): two generators each counted to COUNT.
fn count_and_two_index_sums(count: u64) -> String {
    format!("done {count} {}", count * (count + 1))
}

/// `done N FIB` with FIB the N-th Fibonacci number.
fn fibonacci(n: u64) -> String {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    format!("done {n} {a}")
}

/// `done N INSIDE`: the points of the N x N grid that stay bounded for 100 iterations, with the
/// script's arithmetic in the script's order (IEEE doubles both sides, no fused operations).
fn mandelbrot_inside(n: u64) -> String {
    let size = n as f64;
    let mut inside = 0;
    for y in 0..n {
        let ci = 2.0 * y as f64 / size - 1.0;
        for x in 0..n {
            let cr = 3.0 * x as f64 / size - 2.0;
            let (mut zr, mut zi) = (0.0f64, 0.0f64);
            let mut k = 0;
            while k < 100 && zr * zr + zi * zi <= 4.0 {
                (zr, zi) = (zr * zr - zi * zi + cr, 2.0 * zr * zi + ci);
                k += 1;
            }
            inside += u64::from(k == 100);
        }
    }
    format!("done {n} {inside}")
}

/// `done N LENGTH WORDS`: the length of N `kXXXXX=I` records joined with commas, and N.
fn tables_joined(n: u64) -> String {
    let digits = |v: u64| v.to_string().len() as u64;
    let records: u64 = (1..=n)
        .map(|i| 1 + digits((i * 7919) % n).max(5) + 1 + digits(i))
        .sum();
    format!("done {n} {} {n}", records + n.saturating_sub(1))
}

/// How many times signal_fire fires its signal (the scripts' `FIRES`).
pub const SIGNAL_FIRES: u64 = 300;

/// `done COUNT CALLS` with CALLS = COUNT * 300: every handler ran on every fire.
fn handlers_and_calls(count: u64) -> String {
    format!("done {count} {}", count * SIGNAL_FIRES)
}

/// `done ENTITIES FRAMES HEARTBEATS` with HEARTBEATS = ENTITIES * FRAMES: every entity's
/// Heartbeat handler ran every frame.
fn entities_frames_and_heartbeats(entities: u64) -> String {
    let frames = crate::frame_loop::FRAMES;
    format!("done {entities} {frames} {}", entities * frames)
}

fn nothing(_: u64) -> String {
    "done".to_owned()
}

/// How many times each wait_cycles task waits (the scripts' `ROUNDS`).
pub const WAIT_ROUNDS: u64 = 100;

/// COUNT tasks, each `task.wait()` once; all are suspended at once before the first wakes.
pub const SPAWN_WAIT: Script = Script {
    file: "spawn_wait.luau",
    expected: count_and_index_sum,
};
/// spawn_wait's coroutine work with no scheduler.
pub const SPAWN_WAIT_FLOOR: Script = Script {
    file: "spawn_wait.floor.luau",
    expected: count_and_index_sum,
};
/// COUNT `task.defer(f)` from the main task.
pub const DEFER_FLAT: Script = Script {
    file: "defer_flat.luau",
    expected: count_and_calls,
};
/// COUNT coroutines made and run one at a time.
pub const DEFER_FLAT_FLOOR_EACH: Script = Script {
    file: "defer_flat.floor_each.luau",
    expected: count_and_calls,
};
/// COUNT coroutines all made first, then run in order.
pub const DEFER_FLAT_FLOOR_ALL: Script = Script {
    file: "defer_flat.floor_all.luau",
    expected: count_and_calls,
};
/// COUNT `task.delay` with deadlines spread over 50 ms.
pub const DELAY_TIMERS: Script = Script {
    file: "delay_timers.luau",
    expected: count_and_index_sum,
};
/// TASKS tasks, each `task.wait()` 100 times.
pub const WAIT_CYCLES: Script = Script {
    file: "wait_cycles.luau",
    expected: tasks_and_waits,
};
/// wait_cycles' coroutine work with no scheduler.
pub const WAIT_CYCLES_FLOOR: Script = Script {
    file: "wait_cycles.floor.luau",
    expected: tasks_and_waits,
};
/// COUNT calls of a `coroutine.wrap` generator and COUNT `coroutine.resume` calls: hand-driven
/// coroutines. The same script is its own floor on the plain VM.
pub const HAND_COROUTINES: Script = Script {
    file: "hand_coroutines.luau",
    expected: count_and_two_index_sums,
};
/// Naive recursive fib(COUNT): Lua calls.
pub const COMPUTE_FIB: Script = Script {
    file: "compute_fib.luau",
    expected: fibonacci,
};
/// A COUNT x COUNT Mandelbrot grid: a numeric loop.
pub const COMPUTE_MANDELBROT: Script = Script {
    file: "compute_mandelbrot.luau",
    expected: mandelbrot_inside,
};
/// COUNT records formatted, sorted, joined and split: table and string work.
pub const COMPUTE_TABLES: Script = Script {
    file: "compute_tables.luau",
    expected: tables_joined,
};
/// The compute workloads, which meet no scheduler (also valid Lune code).
pub const COMPUTE_SCRIPTS: [&Script; 3] = [&COMPUTE_FIB, &COMPUTE_MANDELBROT, &COMPUTE_TABLES];

/// COUNT handlers on an "Immediate" signal, fired 300 times.
pub const SIGNAL_FIRE_IMMEDIATE: Script = Script {
    file: "signal_fire.immediate.luau",
    expected: handlers_and_calls,
};
/// COUNT handlers on a "Deferred" signal, fired 300 times.
pub const SIGNAL_FIRE_DEFERRED: Script = Script {
    file: "signal_fire.deferred.luau",
    expected: handlers_and_calls,
};
/// signal_fire's floor: the usual pure-Luau signal pattern, with no scheduler.
pub const SIGNAL_FIRE_FLOOR: Script = Script {
    file: "signal_fire.floor.luau",
    expected: handlers_and_calls,
};
/// frame_10k's entity: the game loop example's own script, run COUNT times by
/// `spindle-bench frame-loop` ([`crate::frame_loop`]).
pub const GAME_LOOP_ENTITY: Script = Script {
    file: "../../spindle/examples/game_loop.luau",
    expected: entities_frames_and_heartbeats,
};
/// frame_10k's floor: the same entities and frames, every call and resumption made by hand.
pub const FRAME_10K_FLOOR: Script = Script {
    file: "frame_10k.floor.luau",
    expected: entities_frames_and_heartbeats,
};

/// Does nothing: the memory baseline.
pub const EMPTY: Script = Script {
    file: "empty.luau",
    expected: nothing,
};

/// The scripts written for the scheduler (also valid Lune code).
pub const SCHEDULER_SCRIPTS: [&Script; 5] = [
    &SPAWN_WAIT,
    &DEFER_FLAT,
    &DELAY_TIMERS,
    &WAIT_CYCLES,
    &HAND_COROUTINES,
];
/// The floors and the baseline: plain Luau, no `task` library.
pub const PLAIN_SCRIPTS: [&Script; 8] = [
    &SPAWN_WAIT_FLOOR,
    &DEFER_FLAT_FLOOR_EACH,
    &DEFER_FLAT_FLOOR_ALL,
    &WAIT_CYCLES_FLOOR,
    &HAND_COROUTINES,
    &SIGNAL_FIRE_FLOOR,
    &FRAME_10K_FLOOR,
    &EMPTY,
];

/// The scripts of the frame workloads, which the bench's own hosts run.
pub const FRAME_SCRIPTS: [&Script; 3] = [
    &SIGNAL_FIRE_IMMEDIATE,
    &SIGNAL_FIRE_DEFERRED,
    &GAME_LOOP_ENTITY,
];

/// Where the scripts are: `crates/spindle-bench/scripts` in this checkout.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

impl Script {
    /// The script's path.
    pub fn path(&self) -> PathBuf {
        scripts_dir().join(self.file)
    }

    /// The line a complete run with `count` prints.
    pub fn expected_output(&self, count: u64) -> String {
        (self.expected)(count)
    }

    /// Accepts `stdout` only if it is exactly the expected line (and a newline).
    pub fn verify(&self, count: u64, stdout: &str) -> Result<()> {
        let expected = self.expected_output(count);
        if stdout.trim_end_matches('\n') == expected {
            return Ok(());
        }
        let shown: String = stdout.chars().take(200).collect();
        Err(Error::new(format!(
            "{} {count} printed {shown:?}, expected {expected:?}: the run did not do all its work",
            self.file
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_sum_is_exact_at_a_million() {
        assert_eq!(
            SPAWN_WAIT.expected_output(1_000_000),
            "done 1000000 500000500000"
        );
        assert_eq!(SPAWN_WAIT.expected_output(3), "done 3 6");
        assert_eq!(HAND_COROUTINES.expected_output(3), "done 3 12");
        assert_eq!(SIGNAL_FIRE_FLOOR.expected_output(10), "done 10 3000");
        assert_eq!(GAME_LOOP_ENTITY.expected_output(10), "done 10 300 3000");
    }

    #[test]
    fn compute_checksums_match_small_cases_worked_by_hand() {
        assert_eq!(COMPUTE_FIB.expected_output(10), "done 10 55");
        assert_eq!(COMPUTE_FIB.expected_output(32), "done 32 2178309");
        // 3 records: keys (7919 % 3, 15838 % 3, 23757 % 3) = (2, 1, 0): "k00002=1" and so on,
        // 8 bytes each, and 2 commas.
        assert_eq!(COMPUTE_TABLES.expected_output(3), "done 3 26 3");
        // A 2 x 2 grid: (-2, -1), (-0.5, -1), (-2, 0), (-0.5, 0); only the last two stay bounded.
        assert_eq!(COMPUTE_MANDELBROT.expected_output(2), "done 2 2");
    }

    #[test]
    fn verify_accepts_the_expected_line_with_or_without_newline() {
        assert_eq!(WAIT_CYCLES.verify(10, "done 10 1000\n"), Ok(()));
        assert_eq!(DEFER_FLAT.verify(5, "done 5 5"), Ok(()));
        assert_eq!(EMPTY.verify(0, "done\n"), Ok(()));
    }

    #[test]
    fn verify_rejects_a_short_run_extra_output_or_silence() {
        let short = SPAWN_WAIT.verify(3, "done 2 3\n").unwrap_err();
        assert!(
            short.to_string().contains("spawn_wait.luau 3 printed"),
            "{short}"
        );
        assert!(SPAWN_WAIT.verify(3, "").is_err());
        assert!(SPAWN_WAIT.verify(3, "noise\ndone 3 6\n").is_err());
        assert!(SPAWN_WAIT.verify(3, "done 3 6\ndone 3 6\n").is_err());
    }

    #[test]
    fn every_script_file_exists() {
        for script in SCHEDULER_SCRIPTS
            .iter()
            .chain(&PLAIN_SCRIPTS)
            .chain(&COMPUTE_SCRIPTS)
            .chain(&FRAME_SCRIPTS)
        {
            assert!(script.path().is_file(), "{} is missing", script.file);
        }
    }
}
