//! The host that behaviour tests share: a `Lua` with a scheduler whose reported errors are
//! kept, and `print` and `log` functions that record what a script says, one line a call.
//!
//! Each test module uses the part of it that it needs.
#![allow(dead_code)]

pub mod gates;
pub mod heap;

pub use gates::{install_gates, Gates};
pub use heap::rust_bytes;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use spindle::mlua::{self, Function, Lua, MultiValue};
use spindle::{Clock, Outcome, Scheduler, SchedulerBuilder, Task, TaskError, VirtualClock};

pub struct Host {
    pub lua: Lua,
    pub scheduler: Scheduler,
    /// The clock, when the host runs under virtual time.
    pub clock: Option<VirtualClock>,
    /// What scripts printed or logged (values joined by spaces), and with
    /// [`HostBuilder::errors_in_log`] an `error: <message>` line for each reported error.
    pub log: Rc<RefCell<Vec<String>>>,
    pub errors: Rc<RefCell<Vec<TaskError>>>,
    name: &'static str,
}

type ErrorHook = Box<dyn Fn(&Scheduler, &TaskError)>;

/// How a [`Host`] is set up: virtual time by default.
pub struct HostBuilder {
    virtual_time: bool,
    errors_in_log: bool,
    name: &'static str,
    on_error: Option<ErrorHook>,
    configure: Box<dyn FnOnce(SchedulerBuilder) -> SchedulerBuilder>,
}

impl HostBuilder {
    /// Runs on the real clock, as the watchdog's tests must.
    pub fn real_time(mut self) -> Self {
        self.virtual_time = false;
        self
    }

    /// Writes each reported error into the log as `error: <message>`, in order with the rest.
    pub fn errors_in_log(mut self) -> Self {
        self.errors_in_log = true;
        self
    }

    /// The chunk name of the scripts the host runs (default `main`).
    pub fn chunk_name(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// Runs after an error is kept (and logged).
    pub fn on_error(mut self, extra: impl Fn(&Scheduler, &TaskError) + 'static) -> Self {
        self.on_error = Some(Box::new(extra));
        self
    }

    /// Sets the scheduler's other options; set last, so it may replace the host's error handler
    /// (then the host keeps no errors) or its clock.
    pub fn scheduler(
        mut self,
        configure: impl FnOnce(SchedulerBuilder) -> SchedulerBuilder + 'static,
    ) -> Self {
        self.configure = Box::new(configure);
        self
    }

    pub fn build(self) -> Host {
        let lua = Lua::new();
        let clock = self.virtual_time.then(VirtualClock::new);
        let log: Rc<RefCell<Vec<String>>> = Rc::default();
        let errors: Rc<RefCell<Vec<TaskError>>> = Rc::default();
        let (kept, logged) = (Rc::clone(&errors), Rc::clone(&log));
        let (errors_in_log, extra) = (self.errors_in_log, self.on_error);
        let mut builder = Scheduler::builder().on_error(move |scheduler, error| {
            if errors_in_log {
                logged
                    .borrow_mut()
                    .push(format!("error: {}", error.message));
            }
            kept.borrow_mut().push(error.clone());
            if let Some(extra) = &extra {
                extra(scheduler, error);
            }
        });
        if let Some(clock) = &clock {
            builder = builder.clock(Clock::from(clock.clone()));
        }
        // Last, so that a test may replace the error handler or the clock.
        let scheduler = (self.configure)(builder).build(&lua).unwrap();
        scheduler.install_task_library().unwrap();
        let printed = Rc::clone(&log);
        let tostring: Function = lua.globals().get("tostring").unwrap();
        let print = lua
            .create_function(move |_, values: MultiValue| {
                let mut line = Vec::new();
                for value in values {
                    line.push(tostring.call::<String>(value)?);
                }
                printed.borrow_mut().push(line.join(" "));
                Ok(())
            })
            .unwrap();
        lua.globals().set("print", &print).unwrap();
        lua.globals().set("log", print).unwrap();
        Host {
            lua,
            scheduler,
            clock,
            log,
            errors,
            name: self.name,
        }
    }
}

impl Host {
    pub fn builder() -> HostBuilder {
        HostBuilder {
            virtual_time: true,
            errors_in_log: false,
            name: "main",
            on_error: None,
            configure: Box::new(|builder| builder),
        }
    }

    /// A host under virtual time with the default scheduler.
    pub fn new() -> Host {
        Host::builder().build()
    }

    /// Spawns `source` as a task named by the host's chunk name, and drops its handle.
    pub fn spawn(&self, source: &str) {
        let main = self
            .lua
            .load(source)
            .set_name(format!("={}", self.name))
            .into_function()
            .unwrap();
        drop::<Task>(self.scheduler.spawn(main, ()).unwrap());
    }

    /// Spawns `source` as a task named by the host's chunk name, and returns its handle.
    pub fn spawn_task(&self, source: &str) -> Task {
        let main = self
            .lua
            .load(source)
            .set_name(format!("={}", self.name))
            .into_function()
            .unwrap();
        self.scheduler.spawn(main, ()).unwrap()
    }

    /// Spawns `source` and runs until no task is left.
    pub fn script(&self, source: &str) {
        self.spawn(source);
        self.scheduler.run_blocking().unwrap();
    }

    /// Runs `source` on the main thread, outside any task.
    pub fn exec(&self, source: &str) {
        self.lua
            .load(source)
            .set_name(format!("={}", self.name))
            .exec()
            .unwrap();
    }

    /// The virtual clock.
    pub fn virtual_clock(&self) -> &VirtualClock {
        self.clock
            .as_ref()
            .expect("the host runs under virtual time")
    }

    /// Moves the virtual clock.
    pub fn advance(&self, by: Duration) {
        let clock = self
            .clock
            .as_ref()
            .expect("moving the clock needs virtual time");
        clock.advance(by);
    }

    /// Moves the virtual clock by `seconds` and runs one cycle.
    pub fn step(&self, seconds: f64) {
        self.advance(Duration::from_secs_f64(seconds));
        self.scheduler.cycle().unwrap();
    }

    pub fn log(&self) -> Vec<String> {
        self.log.borrow().clone()
    }

    /// The log so far, emptied.
    pub fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.borrow_mut())
    }

    pub fn messages(&self) -> Vec<String> {
        self.errors
            .borrow()
            .iter()
            .map(|error| error.message.clone())
            .collect()
    }
}

/// The default host with its scripts named `test`.
pub fn test_host() -> Host {
    Host::builder().chunk_name("test").build()
}

/// Runs `body` on a current-thread tokio runtime, inside a `LocalSet` (the scheduler is not
/// `Send`), as an embedder on tokio would.
pub fn on_tokio_local_set<F: std::future::Future>(body: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&runtime, body)
}

/// The host as the contract's corner-case tests use it: a [`Host`] under virtual time whose
/// errors are also logged (`error: <message>`), scripts named `test`, a `now()` global that
/// reads the virtual clock, and the scheduler behind an `Rc` (tests downgrade it to reach it
/// from inside callbacks).
pub struct H {
    pub lua: Lua,
    pub clock: VirtualClock,
    pub sched: Rc<Scheduler>,
    pub log: Rc<RefCell<Vec<String>>>,
    pub errors: Rc<RefCell<Vec<TaskError>>>,
}

pub fn harness() -> H {
    harness_with(|b| b)
}

pub fn harness_with(configure: impl FnOnce(SchedulerBuilder) -> SchedulerBuilder + 'static) -> H {
    let host = Host::builder()
        .errors_in_log()
        .chunk_name("test")
        .scheduler(configure)
        .build();
    let clock = host.clock.expect("virtual time");
    let c = clock.clone();
    let now = host
        .lua
        .create_function(move |_, ()| Ok(c.now().as_secs_f64()))
        .unwrap();
    host.lua.globals().set("now", now).unwrap();
    H {
        lua: host.lua,
        clock,
        sched: Rc::new(host.scheduler),
        log: host.log,
        errors: host.errors,
    }
}

impl H {
    pub fn func(&self, src: &str) -> Function {
        self.lua
            .load(src)
            .set_name("=test")
            .into_function()
            .unwrap()
    }

    /// Spawns `src` as a host task (resumed at once, deferred queue drained).
    pub fn spawn(&self, src: &str) -> Task {
        self.sched.spawn(self.func(src), ()).unwrap()
    }

    /// Spawns `src` and runs the scheduler to completion.
    pub fn run(&self, src: &str) -> Task {
        let id = self.spawn(src);
        self.sched.run_blocking().unwrap();
        id
    }

    pub fn step(&self, seconds: f64) -> spindle::CycleReport {
        self.clock.advance(Duration::from_secs_f64(seconds));
        self.sched.cycle().unwrap()
    }

    pub fn log(&self) -> Vec<String> {
        self.log.borrow().clone()
    }

    pub fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.borrow_mut())
    }

    pub fn global<T: mlua::FromLua>(&self, name: &str) -> T {
        self.lua.globals().get(name).unwrap()
    }

    pub fn result<R: mlua::FromLuaMulti>(&self, id: &Task) -> R {
        match self.sched.take_result::<R>(id).unwrap() {
            Some(Outcome::Finished(v)) => v,
            Some(Outcome::Failed(e)) => panic!("task failed: {e}"),
            Some(_) => panic!("task was cancelled"),
            None => panic!("task has no outcome yet"),
        }
    }
}

/// The lines a test expects in a log.
pub fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}
