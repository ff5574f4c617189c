//! `@spindle/stdio`: writing to stdout and stderr without a newline (`write`, `ewrite`), the
//! terminal's colors and styles as escape codes (`color`, `style`), and `format`, which renders
//! values as `print` would but with tables shown by their contents.
//!
//! Invariant: output keeps the order in which the script wrote it, whichever of `print` and
//! `stdio.write` wrote it. Luau's `print` writes through C's stdio buffer, this module through
//! Rust's; `write` flushes C's buffer before it writes and its own after.

use std::io::Write;

use mlua::{Lua, Table, Value};

/// The Lua side of `@spindle/stdio`.
const STDIO_LUAU: &str = include_str!("stdio.luau");

/// Which stream a write goes to.
#[derive(Clone, Copy)]
enum Stream {
    Out,
    Err,
}

/// Builds the `@spindle/stdio` module: `write(text)`, `ewrite(text)`, `color(name)`,
/// `style(name)` and `format(...)`.
pub fn module(lua: &Lua) -> mlua::Result<Table> {
    let write = lua.create_function(|_, value: Value| write_to(Stream::Out, &value))?;
    let ewrite = lua.create_function(|_, value: Value| write_to(Stream::Err, &value))?;
    let build = lua
        .load(STDIO_LUAU)
        .set_name("=[spindle stdio]")
        .into_function()?;
    build.call((write, ewrite))
}

/// Writes a string's or a buffer's bytes; returns a refusal's text for any other value, or an
/// I/O error's.
fn write_to(stream: Stream, value: &Value) -> mlua::Result<Option<String>> {
    let bytes = match value {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Buffer(b) => b.to_vec(),
        other => {
            return Ok(Some(format!(
                "string or buffer expected, got {}",
                other.type_name()
            )))
        }
    };
    flush_c_stdio();
    let written = match stream {
        Stream::Out => {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes).and_then(|()| out.flush())
        }
        Stream::Err => {
            let mut err = std::io::stderr().lock();
            err.write_all(&bytes).and_then(|()| err.flush())
        }
    };
    Ok(written.err().map(|e| e.to_string()))
}

/// Flushes what `print` left in C's stdio buffers, so that it comes out before what follows.
fn flush_c_stdio() {
    // SAFETY: `fflush(NULL)` flushes every C output stream; it takes no pointer of ours.
    unsafe {
        libc::fflush(std::ptr::null_mut());
    }
}
