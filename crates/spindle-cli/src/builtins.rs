//! The built-in modules that scripts get with `require("@spindle/NAME")`. `require` builds each
//! one on first use and keeps it (crate::require).

use spindle::mlua::{self, Value};
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
