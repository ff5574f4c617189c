//! The built-in modules that scripts get with `require("@spindle/NAME")`. `require` builds each
//! one on first use and keeps it (crate::require).
//!
//! A module binds the standard functions it checks arguments with (`error`, `type`, ...) when it
//! is built, so that a script that replaces them cannot unchain its checks: a failed call would
//! otherwise return the failure as a value. Since a module may be built after the script has run
//! for a while, [`Standard`] keeps the standard globals as they were before the script started,
//! and modules are built with those in place.

use spindle::mlua::{self, Lua, Table, Value};
use spindle::Scheduler;
use spindle_std::process::ProcessInfo;

/// The names `load` knows, for messages.
pub const NAMES: &[&str] = &["fs", "json", "net", "process", "stdio"];

/// Builds the built-in module `name` (without the `@spindle/` prefix); `None` when there is no
/// such module. `process` reads the run's [`ProcessInfo`] from the VM's app data.
pub fn load(name: &str, scheduler: &Scheduler) -> Option<mlua::Result<Value>> {
    let lua = scheduler.lua();
    let module = match name {
        "fs" => spindle_std::fs::module(scheduler),
        "json" => spindle_std::json::module(lua),
        "stdio" => spindle_std::stdio::module(lua),
        "net" => spindle_net::module(scheduler),
        "process" => {
            let info = lua.app_data_ref::<ProcessInfo>().map(|info| info.clone());
            match info {
                Some(info) => spindle_std::process::module(lua, info),
                None => Err(mlua::Error::runtime(
                    "@spindle/process: the run has no process information",
                )),
            }
        }
        _ => return None,
    };
    Some(module.map(Value::Table))
}

/// The standard globals as they were before the script ran: each global's value, and a copy of
/// each library table (`math`, `string`, ...), so that a script that replaced `math.min` is
/// undone too.
pub struct Standard(Table);

impl Standard {
    /// Takes the globals of `lua` as they are now.
    pub fn capture(lua: &Lua) -> mlua::Result<Standard> {
        let globals = lua.globals();
        let standard = lua.create_table()?;
        for pair in globals.pairs::<Value, Value>() {
            let (name, value) = pair?;
            let value = match value {
                Value::Table(library) if library != globals => {
                    let copy = lua.create_table()?;
                    for entry in library.pairs::<Value, Value>() {
                        let (key, item) = entry?;
                        copy.raw_set(key, item)?;
                    }
                    Value::Table(copy)
                }
                other => other,
            };
            standard.raw_set(name, value)?;
        }
        Ok(Standard(standard))
    }

    /// Runs `build` with the standard globals in place, then puts back what the script had made
    /// of them. Only library code runs meanwhile (a module's top level), and the globals are
    /// read and written raw, so no script code sees the swap. Globals the script froze are left
    /// as they are.
    pub fn around<R>(&self, lua: &Lua, build: impl FnOnce() -> R) -> R {
        let globals = lua.globals();
        if globals.is_readonly() {
            return build();
        }
        let mut scripts = Vec::new();
        for pair in self.0.pairs::<Value, Value>() {
            let Ok((name, standard)) = pair else { break };
            let Ok(current) = globals.raw_get::<Value>(&name) else {
                break;
            };
            if globals.raw_set(&name, standard).is_err() {
                break;
            }
            scripts.push((name, current));
        }
        let built = build();
        for (name, current) in scripts {
            // The key is in the table already: setting it again allocates nothing.
            let _ = globals.raw_set(name, current);
        }
        built
    }
}
