//! Spindle's integration tests, one test binary, one module per behaviour users rely on.
//! `support` is the test host they share (and the binary's counting global allocator).
//! docs/testing.md says what each module covers; docs/contract.md indexes rules to tests.

mod support;

mod architecture;
mod async_fns;
mod cancel;
mod errors;
mod frames;
mod host_api;
mod hostile;
mod lifetime;
mod memory_limit;
mod native_code;
mod reference_model;
mod scale;
mod scripts;
mod signals;
mod spawn_defer;
mod task_list;
mod time;
mod traces;
mod types;
mod watchdog;
mod yields;
