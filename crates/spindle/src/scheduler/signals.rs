//! Making signals and reading those scripts made: the host's side of `signal.rs`.

use mlua::{IntoLua, Table, Value};

use super::Scheduler;
use crate::error::{Error, Result};
use crate::signal::{Signal, SignalBehavior};

impl Scheduler {
    /// Makes a signal with the builder's default behaviour
    /// ([`SchedulerBuilder::signal_behavior`](crate::SchedulerBuilder::signal_behavior)),
    /// as `Signal.new()` does in Lua.
    pub fn create_signal(&self) -> Result<Signal> {
        self.make_signal(Value::Nil)
    }

    /// Makes a signal with the given behaviour, as `Signal.new("Immediate")` does in Lua.
    pub fn create_signal_with(&self, behavior: SignalBehavior) -> Result<Signal> {
        self.make_signal(behavior.name().into_lua(&self.shared.lua)?)
    }

    /// The host's handle on a signal a script made (a table made by `Signal.new`).
    pub fn signal_from(&self, object: Table) -> Result<Signal> {
        let library = self.library()?.signal;
        library.adopt(&self.shared.inner, object).ok_or_else(|| {
            Error::Lua(mlua::Error::runtime(
                "Scheduler::signal_from: the table is not a signal made by Signal.new",
            ))
        })
    }

    fn make_signal(&self, behavior: Value) -> Result<Signal> {
        Ok(self
            .library()?
            .signal
            .create(&self.shared.inner, behavior)?)
    }
}
