//! Spindle's benchmark suite: each workload run by the release `spindle` binary, beside a floor
//! that does the same coroutine work on the same Luau VM with no scheduler, as whole-process
//! medians; and Rust async calls through the library beside mlua's own `call_async`.
//!
//! The `spindle-bench` binary runs it (see BENCHMARKS.md at the repository root). This library
//! holds what the binary and the tests share:
//! - [`workload`]: the scripts, their counts, and the one line each must print;
//! - [`suite`]: which processes each workload runs, and the table rows made from their medians;
//! - [`child`]: running one process and reading its wall time and peak RSS;
//! - [`programs`]: finding the programs to run, and refusing a stale `spindle` binary;
//! - [`plain_vm`]: the floors' runner, a Luau VM with no scheduler;
//! - [`async_calls`]: the in-process async-call workloads;
//! - [`frame_loop`]: frame_10k's Spindle side, the game loop driven frame by frame;
//! - [`report`]: medians, targets and the table;
//! - [`machine`]: what the results were measured on;
//! - [`net`]: the network benchmark's wrk reports.
//!
//! Invariant: no measurement is recorded unless its output was verified, so a broken run cannot
//! look fast.
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod async_calls;
pub mod child;
mod error;
pub mod frame_loop;
pub mod machine;
pub mod net;
pub mod plain_vm;
pub mod programs;
pub mod report;
pub mod suite;
pub mod workload;

pub use error::{Error, Result};
