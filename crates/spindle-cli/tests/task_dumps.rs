//! Seeing what a run's tasks do: the task dump on SIGQUIT (the run goes on), the report of
//! tasks stuck at the end of a run (`--report-stuck`), and the timeline of resumptions
//! (`--timeline FILE`, a Chrome trace).

mod support;

use support::{script, spindle_run, text};

#[cfg(unix)]
#[test]
fn sigquit_prints_every_live_task_with_its_traceback_and_the_run_goes_on() {
    use std::io::{BufRead, BufReader};
    use std::process::Command;
    use std::time::Duration;
    use support::{output_within, start_spindle};

    let path = script(
        "quit.luau",
        "local signal = Signal.new()\n\
         local function listen()\n  signal:Wait()\nend\n\
         task.spawn(listen)\n\
         require('@spindle/stdio').write('ready\\n')\n\
         task.wait(3)\n\
         print('went on')\n",
    );
    let mut child = start_spindle(
        &["run", "--report-stuck", "quit.luau"],
        path.parent().unwrap(),
    );
    // The first line says the script is waiting (written through `stdio`, which flushes at
    // once); read on a thread, so that a child that never writes cannot hang the test.
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let first = received.recv_timeout(Duration::from_secs(60));
    assert_eq!(first.as_deref(), Ok("ready"));
    let sent = Command::new("kill")
        .args(["-QUIT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = output_within(child, Duration::from_secs(60)).expect("the run ends after SIGQUIT");
    // Up to the end of the child's output: the reader thread may still hold the last line.
    let rest: Vec<String> =
        std::iter::from_fn(|| received.recv_timeout(Duration::from_secs(10)).ok()).collect();
    assert_eq!(rest, ["went on"], "the run went on after the dump");
    assert_eq!(out.status.code(), Some(0), "SIGQUIT does not end the run");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("spindle: SIGQUIT: 2 live tasks at "),
        "{stderr}"
    );
    let dumped = stderr.split("\n\n").collect::<Vec<_>>();
    assert!(
        dumped[1].starts_with("task #0.0 (waiting until ") && dumped[1].contains("quit.luau:1"),
        "the main task, created by the host: {stderr}"
    );
    assert!(
        dumped[1].contains("quit.luau:7:"),
        "where it waits: {stderr}"
    );
    assert!(
        dumped[2].starts_with(
            "task #1.0 (waiting on a signal), created at quit.luau:5 by task #0.0\nstack traceback:"
        ),
        "{stderr}"
    );
    assert!(dumped[2].contains("quit.luau:3: in function 'listen'"));
    // At the end, the signal waiter is stuck.
    assert!(
        stderr.contains("spindle: 1 task still suspended at the end of the run"),
        "{stderr}"
    );
}

#[test]
fn report_stuck_names_each_task_nothing_can_resume_and_keeps_the_exit_status() {
    let source = "local done = Signal.new()\n\
                  task.spawn(function()\n  done:Wait()\nend)\n\
                  task.spawn(task.wait, math.huge)\n\
                  task.delay(5, print, 'delayed ran')\n\
                  error('main fails')\n";
    let out = spindle_run(&["--virtual-time", "--report-stuck"], "stuck.luau", source);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the failure's status, unchanged"
    );
    assert_eq!(text(&out.stdout), "delayed ran\n");
    let stderr = text(&out.stderr);
    let report = stderr
        .split_once("spindle: 2 tasks still suspended at the end of the run")
        .unwrap_or_else(|| panic!("{stderr}"))
        .1;
    assert!(
        report.contains("task #1.0 (waiting on a signal), created at stuck.luau:2 by task #0.0"),
        "{report}"
    );
    assert!(report.contains("stuck.luau:3:"), "{report}");
    assert!(
        report.contains("task #2.0 (waiting for ever), created at stuck.luau:5 by task #0.0"),
        "{report}"
    );
    assert!(!report.contains("#3.0"), "the delayed task ran: {report}");

    let quiet = spindle_run(&["--virtual-time"], "stuck.luau", source);
    assert!(
        !text(&quiet.stderr).contains("still suspended"),
        "only with --report-stuck"
    );
    let clean = spindle_run(&["--report-stuck"], "clean.luau", "task.wait(0.01)\n");
    assert_eq!(text(&clean.stderr), "", "no stuck task, no report");
}

#[test]
fn the_timeline_is_a_chrome_trace_of_every_resumption_with_its_cause() {
    let dir = std::env::temp_dir().join(format!("spindle-cli-timeline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("run.json");
    let out = spindle_run(
        &["--virtual-time", "--timeline", trace.to_str().unwrap()],
        "timeline.luau",
        "local ping = Signal.new('Immediate')\n\
         task.spawn(function()\n  ping:Wait()\nend)\n\
         task.defer(print, 'deferred')\n\
         task.delay(1, print, 'delayed')\n\
         ping:Fire()\n\
         task.wait(2)\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&trace).unwrap()).expect("the file is JSON");
    let events = json["traceEvents"].as_array().expect("traceEvents");
    let metadata: Vec<&str> = events
        .iter()
        .filter(|e| e["ph"] == "M")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(metadata, ["process_name", "thread_name"]);
    let spans: Vec<&serde_json::Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    let seen: Vec<(&str, &str)> = spans
        .iter()
        .map(|e| {
            (
                e["args"]["task"].as_str().unwrap(),
                e["cat"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("#0.0", "spawn"),
            ("#1.0", "spawn"),
            ("#1.0", "signal"),
            ("#2.0", "defer"),
            ("#3.0", "delay"),
            ("#0.0", "timer"),
        ]
    );
    let names: Vec<&str> = spans.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names[0], "task #0.0 timeline.luau:1");
    assert_eq!(names[1], "task #1.0 timeline.luau:2");
    let ts = |e: &serde_json::Value| e["ts"].as_f64().unwrap();
    let dur = |e: &serde_json::Value| e["dur"].as_f64().unwrap();
    assert!(spans.iter().all(|e| ts(e) >= 0.0 && dur(e) >= 0.0));
    assert!(
        spans.windows(2).all(|w| ts(w[0]) <= ts(w[1])),
        "in start order"
    );
    // The waiter woken by the fire ran inside the main task's first resumption.
    assert!(ts(spans[2]) + dur(spans[2]) <= ts(spans[0]) + dur(spans[0]));
    let clock = |e: &serde_json::Value| e["args"]["clock"].as_f64().unwrap();
    assert_eq!(
        (clock(spans[4]), clock(spans[5])),
        (1.0, 2.0),
        "virtual time"
    );
}

#[test]
fn a_timeline_that_cannot_be_created_is_refused_before_the_script_runs() {
    let out = spindle_run(
        &["--timeline", "/nonexistent-dir/run.json"],
        "unrun.luau",
        "print('ran')\n",
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout), "");
    assert!(
        text(&out.stderr)
            .starts_with("spindle: cannot create the timeline '/nonexistent-dir/run.json': "),
        "{}",
        text(&out.stderr)
    );
}
