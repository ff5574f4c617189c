//! The `task` library that scripts see: Rust primitives joined to `task.luau`.
//!
//! The Lua half checks arguments, or words the problem with a function or thread that `spawn`,
//! `defer` or `delay` declined ([`Checked::Unfit`]), so that bad calls raise plain string errors
//! naming the function, the argument and the caller's line, and holds the async functions'
//! continuation; the Rust half here turns each call into a scheduler operation on the calling or
//! named thread, `task.wait`'s as a plain C function (`vm::create_wait`).
//!
//! The library builds on the standard `coroutine` and `debug` functions as they were before any
//! scheduler replaced them (`vm::Pristine`), so that a scheduler attached after another one was
//! dropped does not build on the dropped one's replacements.

use std::rc::Rc;

use mlua::{Function, Lua, MultiValue, Table, Thread, Value};

use crate::async_fn::failure_mark;
use crate::engine::{seconds_to_delay, Inner};
use crate::error::{refusal, Checked};
use crate::signal::SignalBehavior;
use crate::vm::{self, resume_mark};

const SOURCE: &str = include_str!("task.luau");

/// The chunk name of `task.luau`: the watchdog knows its functions by it (`vm::TASK_LIB_CHUNK`).
const CHUNK_NAME: &str = vm::TASK_LIB_CHUNK;

/// What `task.luau` builds.
#[derive(Clone)]
pub(crate) struct Library {
    /// The `task` table.
    pub task: Table,
    /// Wraps a Spindle async function's `start` into the function scripts call.
    pub make_async: Function,
    /// `coroutine.resume` and `coroutine.wrap` that hand threads blocked in mlua futures over
    /// to the scheduler, and `coroutine.close` that ends a closed task's pending work: C
    /// functions (`vm/coroutines.rs`) on `task.luau`'s slow paths.
    pub resume: Function,
    pub wrap: Function,
    pub close: Function,
    /// The `Signal` global and the methods the host calls on signals.
    pub signal: crate::signal::SignalLibrary,
}

/// The reason alone (or nil): how a primitive with no results refuses.
fn refused(result: mlua::Result<()>) -> Option<String> {
    result.err().map(|error| refusal(&error))
}

/// What `task.spawn`, `defer` and `delay` run: a function, in a new thread, or a thread.
enum Target {
    Function(Function),
    Thread(Thread),
}

impl Target {
    /// The target in `value`; `None` for anything else, or, with `suspended_only` (as
    /// `task.spawn` asks), for a thread that is not suspended: `task.luau` words the problem.
    /// Allocates nothing, so it cannot fail.
    fn of(lua: &Lua, value: Value, suspended_only: bool) -> Option<Self> {
        match value {
            Value::Function(f) => Some(Target::Function(f)),
            Value::Thread(thread) if !suspended_only || vm::is_suspended(lua, &thread) => {
                Some(Target::Thread(thread))
            }
            _ => None,
        }
    }

    /// A function becomes a new thread (`fresh`); a thread is used as it is.
    fn into_thread(self, lua: &Lua) -> mlua::Result<(Thread, bool)> {
        match self {
            Target::Function(f) => Ok((lua.create_thread(f)?, true)),
            Target::Thread(thread) => Ok((thread, false)),
        }
    }
}

/// Builds the `task` table and the functions that go with it.
pub(crate) fn build(
    lua: &Lua,
    inner: &Rc<Inner>,
    signal_behavior: SignalBehavior,
) -> mlua::Result<Library> {
    let rt = lua.create_table()?;

    let sched = Rc::clone(inner);
    rt.raw_set(
        "spawn",
        lua.create_function(move |lua, (target, args): (Value, MultiValue)| {
            let Some(target) = Target::of(lua, target, true) else {
                return Ok(Checked::Unfit);
            };
            Ok(Checked::of((|| {
                sched.ensure_open()?;
                let (thread, _) = target.into_thread(lua)?;
                sched.spawn_thread(lua, &thread, args)?;
                Ok(thread)
            })()))
        })?,
    )?;

    let sched = Rc::clone(inner);
    rt.raw_set(
        "defer",
        lua.create_function(move |lua, (target, args): (Value, MultiValue)| {
            let Some(target) = Target::of(lua, target, false) else {
                return Ok(Checked::Unfit);
            };
            Ok(Checked::of((|| {
                sched.ensure_open()?;
                let (thread, fresh) = target.into_thread(lua)?;
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
                let Some(target) = Target::of(lua, target, false) else {
                    return Ok(Checked::Unfit);
                };
                Ok(Checked::of((|| {
                    sched.ensure_open()?;
                    let (thread, fresh) = target.into_thread(lua)?;
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
    rt.raw_set("sliced_hint", vm::create_sliced_hint(lua)?)?;
    rt.raw_set("yield", &pristine.yield_)?;
    rt.raw_set("status", &pristine.status)?;

    let (task, make_async, hand): (Table, Function, Table) = lua
        .load(SOURCE)
        .set_name(CHUNK_NAME)
        .set_mode(mlua::chunk::ChunkMode::Text)
        .call(&rt)?;
    let (resume, wrap, close) = vm::create_coroutine_functions(lua, &hand)?;
    let signal = crate::signal::build(lua, inner, &rt, signal_behavior)?;
    Ok(Library {
        task,
        make_async,
        resume,
        wrap,
        close,
        signal,
    })
}
