//! The libraries `spindle run` gives scripts as `require("@spindle/NAME")`.

use spindle::mlua::{self, IntoLua};
use spindle::Scheduler;

/// The names `load` knows.
pub const NAMES: [&str; 1] = ["net"];

/// The library `NAME` of `@spindle/NAME`, built for `scheduler`'s Lua; `None` for a name that
/// is no library of Spindle's.
pub fn load(name: &str, scheduler: &Scheduler) -> Option<mlua::Result<mlua::Value>> {
    match name {
        "net" => Some(spindle_net::module(scheduler).and_then(|net| net.into_lua(scheduler.lua()))),
        _ => None,
    }
}
