//! `require` for `spindle run`: Luau's require-by-string on mlua's support for it, plus what
//! that support lacks.
//!
//! From mlua (`Lua::create_require_function` with its `FsRequirer`): relative paths (`./x`,
//! `../y`) resolved against the requiring file, `.luau` and `.lua` files, `init.luau` for a
//! directory, `.luaurc` aliases (`@alias/...`), ambiguity refused, and one run of each module
//! with its result cached. Added here:
//! - `@spindle/NAME`: the built-in modules ([`crate::builtins`]), each built once.
//! - Errors that name the requiring file and line: `main.luau:3: cannot require './x': ...`.
//!   A module that fails to load (a syntax error, an error at its top level) passes its own
//!   error through unchanged, naming its own file and line.
//! - Cycles: a module required again while it is still loading is refused with the chain
//!   (`require cycle: a.luau -> b.luau -> a.luau`), instead of recursing until the stack
//!   overflows.
//! - Modules are loaded under the name of their file (`lib/util.luau`), so their errors and
//!   tracebacks name the file; an `init.luau` still resolves `./x` against its directory's
//!   parent, as Luau specifies (`@self/x` for its own directory).
//!
//! A module's top level must not yield: `require` is a Rust function that runs the module, so
//! `task.wait` (or a signal's `Wait`, or an async function) at a module's top level fails with
//! `attempt to yield across metamethod/C-call boundary`, naming the module's line. Roblox
//! allows yielding modules; refusing them keeps loading one atomic step, so no task can see a
//! half-loaded module or load it twice. A module starts waiting work with `task.spawn`.
//!
//! Invariant: `loading` holds the modules whose top level is running, innermost last; since a
//! module cannot yield, they are exactly the nested `require` calls on the stack.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use spindle::mlua::luau::{FsRequirer, NavigateError, Require};
use spindle::mlua::{self, Function, Lua, Value};
use spindle::{Scheduler, WeakScheduler};

/// The Lua side of `require`: raises a refusal, or a module's error, as a plain string at the
/// caller's level, as Luau's own functions raise theirs (an error returned from a Rust function
/// reaches scripts as an error object).
const REQUIRE_LUAU: &str = r#"
local load = ...
local error = error
return function(path)
	local ok, result = load(path)
	if not ok then
		error(result, 0)
	end
	return result
end
"#;

/// How many module loads may nest. Each takes four C calls of Luau's 200 (Rust `require`, its
/// call of mlua's, the loader, the module's call); past about 95, Luau's C stack overflow turned
/// into `error in error handling`.
const MAX_NESTING: usize = 64;

/// The chunk name of [`REQUIRE_LUAU`], which [`caller`] skips.
const REQUIRE_CHUNK: &str = "=[spindle require]";

/// What the `require` function and its requirer share.
struct Shared {
    /// The chunk name of the file calling `require` now, which mlua's navigation takes for
    /// the requirer (mlua's own guess would be the Lua half of `require`).
    requirer: RefCell<Option<String>>,
    /// The modules whose top level is running: cache key and file name.
    loading: RefCell<Vec<(String, String)>>,
    /// Chunk names of the `init.luau` modules loaded so far, and the module path each stands for
    /// (`@lib/init.luau` -> `@lib`).
    init_chunks: RefCell<HashMap<String, String>>,
    /// The built-in modules made so far.
    builtins: RefCell<HashMap<String, Value>>,
    /// The standard globals the built-in modules are made with.
    standard: crate::builtins::Standard,
}

/// Installs `require` as a global of the scheduler's VM.
pub fn install(scheduler: &Scheduler) -> mlua::Result<()> {
    let lua = scheduler.lua();
    let shared = Rc::new(Shared {
        requirer: RefCell::default(),
        loading: RefCell::default(),
        init_chunks: RefCell::default(),
        builtins: RefCell::default(),
        // Before the script runs, and before `require` is a global of its own.
        standard: crate::builtins::Standard::capture(lua)?,
    });
    let navigate = lua.create_require_function(Requirer {
        files: FsRequirer::new(),
        shared: shared.clone(),
    })?;
    // Weak: the function lives in the VM, which the scheduler owns.
    let scheduler = scheduler.downgrade();
    let load = lua.create_function(move |lua, path: Value| {
        let (requirer, place) = caller(lua);
        let Value::String(text) = &path else {
            let kind = match path {
                Value::Integer(_) | Value::Number(_) => "number",
                _ => path.type_name(),
            };
            let message =
                format!("{place}invalid argument #1 to 'require' (string expected, got {kind})");
            return Ok((false, Value::String(lua.create_string(message)?)));
        };
        let path = text.to_string_lossy();
        let loaded = match path.strip_prefix("@spindle/") {
            Some(name) => builtin(&shared, &scheduler, name),
            None => {
                *shared.requirer.borrow_mut() = requirer;
                let loaded = navigate.call::<Value>(text);
                *shared.requirer.borrow_mut() = None;
                loaded
            }
        };
        match loaded {
            Ok(value) => Ok((true, value)),
            Err(error) => {
                let message = match module_failure(&error) {
                    // Out of memory stays an error of its own kind.
                    Some(own) if matches!(innermost(&own), mlua::Error::MemoryError(_)) => {
                        return Err(own)
                    }
                    Some(own) => message_of(&own),
                    None => format!("{place}cannot require '{path}': {}", message_of(&error)),
                };
                Ok((false, Value::String(lua.create_string(message)?)))
            }
        }
    })?;
    let require: Function = lua
        .load(REQUIRE_LUAU)
        .set_name(REQUIRE_CHUNK)
        .into_function()?
        .call(load)?;
    lua.globals().set("require", require)
}

/// A built-in module, made on first use.
fn builtin(shared: &Shared, scheduler: &WeakScheduler, name: &str) -> mlua::Result<Value> {
    if let Some(module) = shared.builtins.borrow().get(name) {
        return Ok(module.clone());
    }
    let Some(scheduler) = scheduler.upgrade() else {
        return Err(refusal("the scheduler is gone".into()));
    };
    let lua = scheduler.lua();
    match shared
        .standard
        .around(lua, || crate::builtins::load(name, &scheduler))
    {
        Some(Ok(module)) => {
            shared
                .builtins
                .borrow_mut()
                .insert(name.to_owned(), module.clone());
            Ok(module)
        }
        Some(Err(error)) => Err(error),
        None => Err(refusal(format!(
            "there is no built-in module '{name}' (there are: {})",
            crate::builtins::NAMES.join(", ")
        ))),
    }
}

/// The innermost Lua function on the stack that called `require`, past the Lua half of
/// `require`, `pcall` and other C functions: its chunk name (`@main.luau`), and `file:line: `
/// for messages.
fn caller(lua: &Lua) -> (Option<String>, String) {
    for level in 1.. {
        let place = lua.inspect_stack(level, |debug| {
            let source = debug.source();
            if source.what == "C" || source.source.as_deref() == Some(REQUIRE_CHUNK) {
                return None;
            }
            let place = match (&source.short_src, debug.current_line()) {
                (Some(file), Some(line)) => format!("{file}:{line}: "),
                _ => String::new(),
            };
            Some((source.source.map(|s| s.into_owned()), place))
        });
        match place {
            Some(Some(place)) => return place,
            Some(None) => continue,
            None => break,
        }
    }
    (None, String::new())
}

/// An error's message in a line or so: without mlua's prefixes, a traceback, or the prefix of
/// Luau's navigation errors.
fn message_of(error: &mlua::Error) -> String {
    let text = match innermost(error) {
        mlua::Error::RuntimeError(text) => text.clone(),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        other => other.to_string(),
    };
    let text = text
        .split("\nstack traceback:")
        .next()
        .unwrap_or_default()
        .trim_end();
    // `error requiring module "./x": could not resolve child component "x"`
    match text.split_once("\": ") {
        Some((head, rest)) if head.starts_with("error requiring module \"") => rest.to_owned(),
        _ => text.to_owned(),
    }
}

fn innermost(error: &mlua::Error) -> &mlua::Error {
    match error {
        mlua::Error::CallbackError { cause, .. } => innermost(cause),
        other => other,
    }
}

/// Why `require` refused, as an error whose text is the message alone (mlua shows a
/// `RuntimeError` as `runtime error: ...`).
#[derive(Debug)]
struct Refusal(String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

fn refusal(message: String) -> mlua::Error {
    mlua::Error::external(Refusal(message))
}

/// A module's own error (raised while its file was compiled or its top level ran), carried
/// through `require` unchanged.
#[derive(Debug)]
struct ModuleFailed(mlua::Error);

impl std::fmt::Display for ModuleFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ModuleFailed {}

fn module_failure(error: &mlua::Error) -> Option<mlua::Error> {
    match innermost(error) {
        mlua::Error::ExternalError(external) => external
            .downcast_ref::<ModuleFailed>()
            .map(|failed| failed.0.clone()),
        _ => None,
    }
}

/// Navigates as mlua's `FsRequirer`, loading modules through [`load_module`].
struct Requirer {
    files: FsRequirer,
    shared: Rc<Shared>,
}

impl Require for Requirer {
    fn is_require_allowed(&self, chunk_name: &str) -> bool {
        match &*self.shared.requirer.borrow() {
            Some(requirer) => self.files.is_require_allowed(requirer),
            None => self.files.is_require_allowed(chunk_name),
        }
    }

    fn reset(&mut self, chunk_name: &str) -> Result<(), NavigateError> {
        let requirer = self.shared.requirer.borrow().clone();
        let chunk_name = requirer.as_deref().unwrap_or(chunk_name);
        let module = self.shared.init_chunks.borrow().get(chunk_name).cloned();
        self.files.reset(module.as_deref().unwrap_or(chunk_name))
    }

    fn jump_to_alias(&mut self, path: &str) -> Result<(), NavigateError> {
        self.files.jump_to_alias(path)
    }

    fn to_parent(&mut self) -> Result<(), NavigateError> {
        self.files.to_parent()
    }

    fn to_child(&mut self, name: &str) -> Result<(), NavigateError> {
        self.files.to_child(name)
    }

    fn has_module(&self) -> bool {
        self.files.has_module()
    }

    fn cache_key(&self) -> String {
        self.files.cache_key()
    }

    fn has_config(&self) -> bool {
        self.files.has_config()
    }

    fn config(&self) -> std::io::Result<Vec<u8>> {
        self.files.config()
    }

    /// mlua asks for the loader on every `require`, cached or not: the file is read only when
    /// the loader is called.
    fn loader(&self, lua: &Lua) -> mlua::Result<Function> {
        // FsRequirer's cache key is the module file's absolute path.
        let file = PathBuf::from(self.files.cache_key());
        let shared = self.shared.clone();
        lua.create_function(move |lua, ()| load_module(lua, &shared, &file))
    }
}

/// Compiles and runs a module's file, refusing a cycle.
fn load_module(lua: &Lua, shared: &Shared, file: &Path) -> mlua::Result<Value> {
    let key = file.display().to_string();
    let name = display_name(file);
    {
        let loading = shared.loading.borrow();
        if let Some(at) = loading.iter().position(|(open, _)| *open == key) {
            let mut chain: Vec<&str> = loading[at..].iter().map(|(_, n)| n.as_str()).collect();
            chain.push(&name);
            return Err(refusal(format!("require cycle: {}", chain.join(" -> "))));
        }
    }
    if shared.loading.borrow().len() >= MAX_NESTING {
        return Err(refusal(format!(
            "modules nested more than {MAX_NESTING} deep (each require of a loading module \
             takes C stack, which Luau bounds)"
        )));
    }
    let source = std::fs::read(file).map_err(|e| refusal(format!("cannot read '{name}': {e}")))?;
    let chunk_name = format!("@{name}");
    if is_init(file) {
        let module = file.parent().map(display_name).unwrap_or_default();
        shared
            .init_chunks
            .borrow_mut()
            .insert(chunk_name.clone(), format!("@{module}"));
    }
    let chunk = lua
        .load(&source[..])
        .set_name(chunk_name)
        .set_mode(mlua::chunk::ChunkMode::Text)
        .into_function()
        .map_err(|e| mlua::Error::external(ModuleFailed(e)))?;
    shared.loading.borrow_mut().push((key, name));
    let result = chunk.call::<Value>(());
    shared.loading.borrow_mut().pop();
    result.map_err(|e| mlua::Error::external(ModuleFailed(e)))
}

fn is_init(file: &Path) -> bool {
    file.file_stem().is_some_and(|stem| stem == "init")
}

/// A module file's name in messages: relative to the working directory when inside it, as the
/// main script is named by the path the user typed.
fn display_name(file: &Path) -> String {
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| file.strip_prefix(cwd).ok().map(Path::to_path_buf));
    match relative {
        Some(relative) if !relative.as_os_str().is_empty() => relative.display().to_string(),
        _ => file.display().to_string(),
    }
}
