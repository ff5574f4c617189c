//! The floors' runner: a script run on a Luau VM with no scheduler.
//!
//! It is the same VM as `spindle run`'s (this crate links the same mlua and Luau build, and
//! `Lua::new()` opens the same libraries and, under Spindle's default `native` feature, compiles
//! the script to native code as `spindle run` does), with nothing installed: no `task` library, and the
//! standard `coroutine` functions. A floor does not run under `spindle run` itself, because
//! installing the `task` library replaces `coroutine.resume` and `coroutine.wrap` with versions
//! that watch for hand resumes (contract rule 13), and those would be measured in the floors'
//! every resume (the `hand_coroutines` workload measures exactly that cost).

use std::path::Path;

use mlua::{Lua, Variadic};

use crate::error::{Error, Result};

/// Runs the script at `file` as a main chunk with `args` as its `...`.
pub fn run_file(file: &Path, args: Vec<String>) -> Result<()> {
    let source = std::fs::read(file)
        .map_err(|e| Error::new(format!("cannot read '{}': {e}", file.display())))?;
    let lua = Lua::new();
    lua.load(&source[..])
        .set_name(format!("@{}", file.display()))
        .set_mode(mlua::chunk::ChunkMode::Text)
        .call::<()>(Variadic::from_iter(args))
        .map_err(|e| Error::new(format!("{}: {e}", file.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_see_the_standard_coroutine_library_and_no_task_library() {
        let dir = std::env::temp_dir().join(format!("spindle-bench-plain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("probe.luau");
        std::fs::write(
            &script,
            "assert(task == nil, 'no task library')\n\
             assert(debug.info(coroutine.resume, 's') == '[C]', 'coroutine.resume is the C one')\n\
             assert(select('#', ...) == 2 and ... == '7')",
        )
        .unwrap();
        run_file(&script, vec!["7".into(), "x".into()]).unwrap();
    }

    #[test]
    fn a_script_error_names_the_file_and_line() {
        let dir =
            std::env::temp_dir().join(format!("spindle-bench-plain-err-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("broken.luau");
        std::fs::write(&script, "local x = 1\nerror('boom')").unwrap();
        let error = run_file(&script, Vec::new()).unwrap_err().to_string();
        assert!(error.contains("broken.luau:2: boom"), "{error}");
    }
}
