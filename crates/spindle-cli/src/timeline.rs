//! `spindle run --timeline FILE`: the scheduler's resumptions as a Chrome trace (the JSON
//! "traceEvents" format that Perfetto and `chrome://tracing` open): one complete event ("X")
//! a resumption, named after its task and where the task was created, with its cause as the
//! event's category, on one track, since one thread runs every task.
//!
//! Spans are written as the run goes (between cycles), so a long run holds none in memory; the
//! file is a valid trace once [`TimelineFile::finish`] closes the array.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::json;
use spindle::Span;

/// The one process and thread of the trace.
const PID: u32 = 1;
const TID: u32 = 1;

pub(crate) struct TimelineFile {
    path: PathBuf,
    out: BufWriter<File>,
    /// The first error writing met; the rest of the run writes nothing more.
    failed: Option<io::Error>,
}

impl TimelineFile {
    /// Creates the file and writes the trace's metadata: the process named after the script.
    pub(crate) fn create(path: &Path, script: &Path) -> io::Result<TimelineFile> {
        let mut out = BufWriter::new(File::create(path)?);
        let process = json!({
            "name": "process_name", "ph": "M", "pid": PID, "tid": TID,
            "args": { "name": format!("spindle run {}", script.display()) },
        });
        let thread = json!({
            "name": "thread_name", "ph": "M", "pid": PID, "tid": TID,
            "args": { "name": "scheduler" },
        });
        write!(
            out,
            "{{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n{process},\n{thread}"
        )?;
        Ok(TimelineFile {
            path: path.to_owned(),
            out,
            failed: None,
        })
    }

    /// Appends the spans, one event each.
    pub(crate) fn write(&mut self, spans: Vec<Span>) {
        if self.failed.is_some() {
            return;
        }
        for span in spans {
            if let Err(error) = writeln!(self.out, ",").and_then(|()| {
                serde_json::to_writer(&mut self.out, &event(&span)).map_err(io::Error::from)
            }) {
                self.failed = Some(error);
                return;
            }
        }
    }

    /// Closes the event array and flushes the file; the error names the file.
    pub(crate) fn finish(mut self) -> Result<(), String> {
        let closed = match self.failed.take() {
            Some(error) => Err(error),
            None => write!(self.out, "\n]}}\n").and_then(|()| self.out.flush()),
        };
        closed.map_err(|e| format!("cannot write the timeline '{}': {e}", self.path.display()))
    }
}

/// A resumption as a complete event: times in microseconds, as the format has them.
fn event(span: &Span) -> serde_json::Value {
    let task = span.task.to_string();
    let site = span.site.as_ref().map(ToString::to_string);
    let name = match &site {
        Some(site) => format!("task {task} {site}"),
        None => format!("task {task}"),
    };
    json!({
        "name": name,
        "cat": span.cause.as_str(),
        "ph": "X",
        "ts": micros(span.start),
        "dur": micros(span.duration),
        "pid": PID,
        "tid": TID,
        "args": {
            "task": task,
            "cause": span.cause.as_str(),
            "site": site,
            "clock": span.clock.as_secs_f64(),
            "cycle": span.cycle,
        },
    })
}

fn micros(duration: std::time::Duration) -> f64 {
    duration.as_nanos() as f64 / 1000.0
}
