//! The `task` library that scripts see: Rust primitives joined to `task.luau`.
//!
//! The Lua half checks arguments (so that bad calls raise plain string errors naming the
//! function, the argument and the caller's line) and holds the async functions' continuation;
//! the Rust half here turns each call into a scheduler operation on the calling or named thread,
//! `task.wait`'s as a plain C function (`vm::create_wait`).
//!
//! The library builds on the standard `coroutine` and `debug` functions as they were before any
//! scheduler replaced them ([`Pristine`]), so that a scheduler attached after another one was
//! dropped does not build on the dropped one's replacements.

use std::ffi::c_int;
use std::rc::Rc;

use mlua::state::RawLua;
use mlua::{Function, IntoLuaMulti, Lua, MultiValue, Table, Thread, Value};

use crate::async_fn::failure_mark;
use crate::scheduler::{resume_mark, seconds_to_delay, Inner};
use crate::vm;

const SOURCE: &str = include_str!("task.luau");

/// The chunk name of `task.luau`: the watchdog knows Spindle's `coroutine.resume` by it.
pub(crate) const CHUNK_NAME: &str = "=[spindle task]";

/// The standard functions Spindle builds on, captured the first time a scheduler is attached
/// to a `Lua` and kept in its app data for every later one.
#[derive(Clone)]
pub(crate) struct Pristine {
    pub resume: Function,
    pub wrap: Function,
    pub close: Function,
    pub create: Function,
    pub yield_: Function,
    pub status: Function,
}

impl Pristine {
    pub(crate) fn of(lua: &Lua) -> mlua::Result<Self> {
        if let Some(pristine) = lua.app_data_ref::<Pristine>() {
            return Ok(pristine.clone());
        }
        // Read raw, and only Luau's own functions are taken: the scheduler calls some of them
        // where no Lua code may run (`close` with the memory limit lifted), so one that code
        // run before the scheduler was attached replaced is refused.
        let coroutine: Table = lua.globals().raw_get("coroutine").map_err(|_| {
            mlua::Error::runtime("Spindle needs the coroutine library, which this Lua lacks")
        })?;
        let native = |name: &str| -> mlua::Result<Function> {
            let function: Function = coroutine.raw_get(name)?;
            if function.info().what != "C" {
                return Err(mlua::Error::runtime(format!(
                    "Spindle needs Luau's own coroutine.{name}, which was replaced before the scheduler was attached"
                )));
            }
            Ok(function)
        };
        let pristine = Pristine {
            resume: native("resume")?,
            wrap: native("wrap")?,
            close: native("close")?,
            create: native("create")?,
            yield_: native("yield")?,
            status: native("status")?,
        };
        lua.set_app_data(pristine.clone());
        Ok(pristine)
    }
}

/// What `task.luau` builds.
#[derive(Clone)]
pub(crate) struct Library {
    /// The `task` table.
    pub task: Table,
    /// Wraps a Spindle async function's `start` into the function scripts call.
    pub make_async: Function,
    /// `coroutine.resume` and `coroutine.wrap` that hand threads blocked in mlua futures over
    /// to the scheduler, and `coroutine.close` that ends a closed task's pending work.
    pub resume: Function,
    pub wrap: Function,
    pub close: Function,
    /// The `Signal` global and the methods the host calls on signals.
    pub signal: crate::signal::SignalLibrary,
}

/// What a primitive with results returns to the Lua half: its results, or nil and why it
/// refused, which the Lua half raises as a plain string at its caller's line, naming the
/// function, as Luau's own functions raise their errors. An error returned from an mlua
/// callback would reach scripts as an error userdata, its text `runtime error: ...` with a
/// traceback. (A primitive with no results returns the reason alone, or nil.)
pub(crate) enum Checked<T> {
    Done(T),
    Refused(String),
}

impl<T> Checked<T> {
    pub(crate) fn of(result: mlua::Result<T>) -> Self {
        match result {
            Ok(values) => Checked::Done(values),
            Err(error) => Checked::Refused(refusal(&error)),
        }
    }
}

impl<T: IntoLuaMulti> IntoLuaMulti for Checked<T> {
    fn into_lua_multi(self, lua: &Lua) -> mlua::Result<MultiValue> {
        match self {
            Checked::Done(values) => values.into_lua_multi(lua),
            Checked::Refused(reason) => (Value::Nil, reason).into_lua_multi(lua),
        }
    }

    // mlua's hidden fast path, as `Started` uses it: results go onto the stack directly.
    unsafe fn push_into_stack_multi(self, lua: &RawLua) -> mlua::Result<c_int> {
        match self {
            // SAFETY: each arm forwards this method's own contract (mlua calls it with `lua`
            // locked, as the running state's handle) to the values' `push_into_stack_multi`,
            // which checks the stack for what it pushes.
            Checked::Done(values) => unsafe { values.push_into_stack_multi(lua) },
            // SAFETY: as for `Done`: the same contract, for a nil and a string.
            Checked::Refused(reason) => unsafe { (Value::Nil, reason).push_into_stack_multi(lua) },
        }
    }
}

/// Why an operation failed, as the text of a Lua error: the message without mlua's wrapping
/// or traceback.
pub(crate) fn refusal(error: &mlua::Error) -> String {
    match error {
        mlua::Error::MemoryError(message) => message.clone(),
        // In Luau's words for a bad argument to a function with no name.
        mlua::Error::BadArgument { pos, cause, .. } => {
            format!("invalid argument #{pos} ({})", refusal(cause))
        }
        mlua::Error::CallbackError { cause, .. } => refusal(cause),
        other => crate::error::TaskError::from_lua(None, other).message,
    }
}

/// The reason alone (or nil): how a primitive with no results refuses.
fn refused(result: mlua::Result<()>) -> Option<String> {
    result.err().map(|error| refusal(&error))
}

/// `task.wait` and `Signal:Wait` cannot suspend a thread that cannot yield: the main thread, or
/// code inside a metamethod or a C function's callback. Luau's own `coroutine.yield` says so
/// in these words there.
pub(crate) const CANNOT_YIELD: &str = "attempt to yield across metamethod/C-call boundary";

/// A function becomes a new thread (`fresh`); a thread is used as it is.
fn into_thread(lua: &Lua, target: Value) -> mlua::Result<(Thread, bool)> {
    match target {
        Value::Function(f) => Ok((lua.create_thread(f)?, true)),
        Value::Thread(thread) => Ok((thread, false)),
        other => Err(mlua::Error::runtime(format!(
            "function or thread expected, got {}",
            other.type_name()
        ))),
    }
}

/// Builds the `task` table and the functions that go with it.
pub(crate) fn build(lua: &Lua, inner: &Rc<Inner>) -> mlua::Result<Library> {
    let rt = lua.create_table()?;

    let sched = Rc::clone(inner);
    rt.raw_set(
        "spawn",
        lua.create_function(move |lua, (target, args): (Value, MultiValue)| {
            Ok(Checked::of((|| {
                sched.ensure_open()?;
                let (thread, _) = into_thread(lua, target)?;
                sched.spawn_thread(lua, &thread, args)?;
                Ok(thread)
            })()))
        })?,
    )?;

    let sched = Rc::clone(inner);
    rt.raw_set(
        "defer",
        lua.create_function(move |lua, (target, args): (Value, MultiValue)| {
            Ok(Checked::of((|| {
                sched.ensure_open()?;
                let (thread, fresh) = into_thread(lua, target)?;
                let id = sched.adopt(&thread)?;
                sched.lua_defer(lua, id, args, fresh)?;
                Ok(thread)
            })()))
        })?,
    )?;

    let sched = Rc::clone(inner);
    rt.raw_set(
        "delay",
        lua.create_function(
            move |lua, (seconds, target, args): (f64, Value, MultiValue)| {
                Ok(Checked::of((|| {
                    sched.ensure_open()?;
                    let (thread, fresh) = into_thread(lua, target)?;
                    let id = sched.adopt(&thread)?;
                    sched.delay(lua, id, seconds_to_delay(seconds), args, fresh)?;
                    Ok(thread)
                })()))
            },
        )?,
    )?;

    let sched = Rc::clone(inner);
    rt.raw_set(
        "cancel",
        lua.create_function(move |lua, thread: Thread| Ok(refused(sched.cancel(lua, &thread))))?,
    )?;

    let sched = Rc::clone(inner);
    // Returns why the thread cannot wait, which `task.wait` raises at its caller's line.
    let begin_wait = lua.create_function(move |lua, seconds: f64| {
        let begun = sched
            .ensure_open()
            .and_then(|()| sched.begin_wait(lua, seconds));
        Ok(refused(begun).map(|reason| format!("task.wait: {reason}")))
    })?;
    let sched = Rc::clone(inner);
    let abandon_wait = lua.create_function(move |lua, ()| {
        sched.abandon_wait(lua);
        Ok(())
    })?;
    // Signal:Wait ends its own suspension the same way when resumed by hand.
    rt.raw_set("abandon_wait", &abandon_wait)?;
    // `task.wait` itself, made once `task.luau` hands over its conversion of durations.
    let sched = Rc::clone(inner);
    rt.raw_set(
        "make_wait",
        lua.create_function(move |lua, convert: Function| {
            let record = Inner::begin_wait_raw;
            vm::create_wait(
                lua,
                Rc::clone(&sched),
                record,
                convert,
                begin_wait.clone(),
                abandon_wait.clone(),
            )
        })?,
    )?;

    let sched = Rc::clone(inner);
    rt.raw_set(
        "adopt_pending",
        lua.create_function(move |_, thread: Thread| {
            let adopted = sched
                .ensure_open()
                .and_then(|()| sched.adopt_pending(&thread));
            Ok(refused(adopted))
        })?,
    )?;

    let sched = Rc::clone(inner);
    rt.raw_set(
        "released",
        lua.create_function(move |_, thread: Thread| {
            sched.released_by_hand(&thread);
            Ok(())
        })?,
    )?;

    let sched = Rc::clone(inner);
    rt.raw_set(
        "take_sliced",
        lua.create_function(move |_, thread: Thread| {
            sched.take_sliced(&thread);
            Ok(())
        })?,
    )?;

    let pristine = inner.pristine();
    rt.raw_set("blocked", inner.blocked())?;
    rt.raw_set("sliced", inner.sliced())?;
    rt.raw_set("mark", Value::LightUserData(resume_mark()))?;
    rt.raw_set("slice", Value::LightUserData(vm::slice_mark()))?;
    rt.raw_set("failed", Value::LightUserData(failure_mark()))?;
    rt.raw_set("poll_pending", Value::LightUserData(Lua::poll_pending()))?;
    rt.raw_set("resume", &pristine.resume)?;
    rt.raw_set("create", &pristine.create)?;
    let sched = Rc::clone(inner);
    rt.raw_set(
        "close",
        lua.create_function(move |lua, thread: Thread| sched.close_raw(lua, &thread))?,
    )?;
    rt.raw_set("yield", &pristine.yield_)?;
    rt.raw_set("status", &pristine.status)?;

    let (task, make_async, resume, wrap, close) = lua
        .load(SOURCE)
        .set_name(CHUNK_NAME)
        .set_mode(mlua::chunk::ChunkMode::Text)
        .call(&rt)?;
    let signal = crate::signal::build(lua, inner, &rt, inner.signal_behavior())?;
    Ok(Library {
        task,
        make_async,
        resume,
        wrap,
        close,
        signal,
    })
}
