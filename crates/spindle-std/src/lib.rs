//! Spindle's small standard modules for scripts, as `spindle run` hands them out through
//! `require("@spindle/NAME")`: [`process`] (arguments, environment, exit), [`stdio`] (writing
//! to stdout and stderr without a newline, colors), [`json`] (JSON text to Lua values and
//! back) and [`fs`] (files and directories, as async functions). Each module is a function that
//! builds its Lua table; a host picks the ones it wants
//! and hands them out as it likes. Their shapes follow Lune's `process`, `stdio` and `serde`
//! (JSON part), so that scripts written for Lune port by changing the `require` line.
//!
//! ```
//! let lua = mlua::Lua::new();
//! lua.globals().set("json", spindle_std::json::module(&lua)?)?;
//! let n: f64 = lua.load(r#"json.decode("[1, 2, 3]")[3]"#).eval()?;
//! assert_eq!(n, 3.0);
//! # Ok::<(), mlua::Error>(())
//! ```
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod fs;
pub mod json;
pub mod process;
pub mod stdio;
