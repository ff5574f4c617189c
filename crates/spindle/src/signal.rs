//! Signals: Roblox's `RBXScriptSignal` for scripts and for the host. The guide is on
//! [`Signal`], where `cargo doc` shows it.

use std::fmt;
use std::rc::{Rc, Weak};

use mlua::{FromLua, Function, IntoLua, IntoLuaMulti, Lua, MultiValue, Table, Thread, Value};

use crate::core::TaskId;
use crate::engine::{Inner, WaitStamp};
use crate::error::{refusal, Checked};
use crate::error::{Error, Result};
use crate::vm;

const SOURCE: &str = include_str!("signal.luau");

/// When a signal runs its handlers, as Roblox's `Workspace.SignalBehavior`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SignalBehavior {
    /// Each handler is spawned as a new task inside `Fire`, before `Fire` returns.
    Immediate,
    /// Each handler call is deferred to the next resumption point (Roblox's default).
    #[default]
    Deferred,
}

impl SignalBehavior {
    pub(crate) fn name(self) -> &'static str {
        match self {
            SignalBehavior::Immediate => "Immediate",
            SignalBehavior::Deferred => "Deferred",
        }
    }
}

/// What `signal.luau` builds: the global `Signal` table and the methods the host calls.
#[derive(Clone)]
pub(crate) struct SignalLibrary {
    /// The global `Signal`: `{ new = ... }`.
    pub class: Table,
    /// The metatable of every signal.
    methods: Table,
    new: Function,
    fire: Function,
    /// `Signal::connect`: a connection no task owns.
    host_connect: Function,
    /// Disconnects every connection a script's tasks made (`Scheduler::end_script`).
    end_connections: Function,
}

impl SignalLibrary {
    /// Makes a signal, as `Signal.new(behavior)` does in Lua (nil: the default behaviour),
    /// and the host's handle on it.
    pub(crate) fn create(&self, inner: &Rc<Inner>, behavior: Value) -> mlua::Result<Signal> {
        let object = self.new.call(behavior)?;
        Ok(self.handle(inner, object))
    }

    /// The host's handle on `object`, if it is a signal made by this library.
    pub(crate) fn adopt(&self, inner: &Rc<Inner>, object: Table) -> Option<Signal> {
        (object.metatable().as_ref() == Some(&self.methods)).then(|| self.handle(inner, object))
    }

    /// Disconnects every connection that the tasks of `script` made, on every signal; a call
    /// of theirs that a deferred signal queued is dropped. Returns how many were connected.
    pub(crate) fn end_connections(&self, script: TaskId) -> mlua::Result<usize> {
        self.end_connections.call(Inner::task_key(script))
    }

    fn handle(&self, inner: &Rc<Inner>, object: Table) -> Signal {
        Signal {
            object,
            library: self.clone(),
            scheduler: Rc::downgrade(inner),
        }
    }
}

/// Builds the signal library on the `task` library's primitives (`task_rt`).
pub(crate) fn build(
    lua: &Lua,
    inner: &Rc<Inner>,
    task_rt: &Table,
    default: SignalBehavior,
) -> mlua::Result<SignalLibrary> {
    let rt = lua.create_table()?;
    for name in [
        "abandon_wait",
        "mark",
        "yield",
        "create",
        "resume",
        "status",
    ] {
        rt.raw_set(name, task_rt.raw_get::<Value>(name)?)?;
    }
    let coroutine: Table = lua.globals().get("coroutine")?;
    rt.raw_set("running", coroutine.get::<Function>("running")?)?;
    rt.raw_set("default_behavior", default.name())?;

    // A handler's call is a task of the connection's script, started by the connecting task
    // (a root for a connection the host made): `spawn_as` and `defer_as` take the two keys
    // `owner` gave at `Connect`, then what `task.spawn` and `task.defer` take.
    let sched = Rc::clone(inner);
    rt.raw_set(
        "spawn_as",
        lua.create_function(
            move |lua, (task, script, target, args): (Value, Value, Thread, MultiValue)| {
                Ok(Checked::of((|| {
                    sched.ensure_open()?;
                    let origin = sched.origin_of_keys(&task, &script);
                    sched.spawn_thread_from(lua, &target, origin, args)?;
                    Ok(true)
                })()))
            },
        )?,
    )?;
    let sched = Rc::clone(inner);
    rt.raw_set(
        "defer_as",
        lua.create_function(
            move |lua, (task, script, target, args): (Value, Value, Function, MultiValue)| {
                Ok(Checked::of((|| {
                    sched.ensure_open()?;
                    let thread = lua.create_thread(target)?;
                    let origin = sched.origin_of_keys(&task, &script);
                    let id = sched.adopt_from(&thread, origin)?;
                    sched.lua_defer(lua, id, args, true)?;
                    Ok(true)
                })()))
            },
        )?,
    )?;
    // The keys of the connecting task and its script, or nothing for a connection made outside
    // any task; `false` and the reason when the task's script is being ended.
    // An immediate handler's call through a runner thread, with no task unless it needs one
    // (`engine/signal_call.rs`), and the value the runner yields when its handler returned.
    let lane = vm::handler_call::Lane {
        data: Rc::clone(inner),
        enter: |inner: &Inner, runner, creator, script| {
            inner.enter_handler(runner, creator, script)
        },
        leave: |inner: &Inner, runner, back| inner.leave_handler(runner, back),
    };
    rt.raw_set("call_handler", vm::handler_call::create(lua, lane)?)?;
    rt.raw_set("done", vm::handler_call::done_mark())?;
    let sched = Rc::clone(inner);
    rt.raw_set(
        "owner",
        lua.create_function(move |lua, ()| {
            // A handler call that is no task yet becomes one: the connection is its.
            if let Err(error) = sched.make_running_handler_task(lua) {
                return Ok((
                    Value::Boolean(false),
                    Value::String(lua.create_string(error.to_string())?),
                ));
            }
            Ok(match sched.connecting_task() {
                Ok(Some((task, script))) => (Inner::task_key(task), Inner::task_key(script)),
                Ok(None) => (Value::Nil, Value::Nil),
                Err(error) => (
                    Value::Boolean(false),
                    Value::String(lua.create_string(refusal(&error))?),
                ),
            })
        })?,
    )?;

    let sched = Rc::clone(inner);
    rt.raw_set(
        "begin_wait",
        lua.create_function(move |lua, ()| {
            let begun = sched
                .ensure_open()
                .and_then(|()| sched.begin_signal_wait(lua));
            Ok(Checked::of(begun))
        })?,
    )?;
    let sched = Rc::clone(inner);
    rt.raw_set(
        "is_waiting",
        lua.create_function(move |lua, (thread, token, slot, generation): Stamped| {
            Ok(waiter(lua, thread, token, slot, generation)
                .is_some_and(|(thread, stamp)| sched.is_signal_waiting(&thread, stamp)))
        })?,
    )?;
    let sched = Rc::clone(inner);
    rt.raw_set(
        "wake",
        lua.create_function(
            move |lua,
                  (thread, token, slot, generation, args): (
                Value,
                Value,
                Value,
                Value,
                MultiValue,
            )| {
                if let Err(error) = sched.ensure_open() {
                    return Ok(Some(refusal(&error)));
                }
                if let Some((thread, stamp)) = waiter(lua, thread, token, slot, generation) {
                    sched.wake_signal_waiter(lua, &thread, stamp, args);
                }
                Ok(None)
            },
        )?,
    )?;

    let (class, methods, host_connect, end_connections): (Table, Table, Function, Function) = lua
        .load(SOURCE)
        .set_name("=[spindle signal]")
        .set_mode(mlua::chunk::ChunkMode::Text)
        .call(rt)?;
    Ok(SignalLibrary {
        new: class.raw_get("new")?,
        fire: methods.raw_get("Fire")?,
        class,
        methods,
        host_connect,
        end_connections,
    })
}

/// A waiter entry's values, as `signal.luau` passes them to `is_waiting` and `wake`.
type Stamped = (Value, Value, Value, Value);

/// The thread and stamp of a waiter entry, or `None` for an entry that `Signal:Wait` did not
/// make: the entries live in the signal's own table, which a script can write, and an entry
/// that is not a waiter's wakes nothing (as a stale one), rather than raising mlua's
/// conversion error from inside `Fire`.
fn waiter(
    lua: &Lua,
    thread: Value,
    token: Value,
    slot: Value,
    generation: Value,
) -> Option<(Thread, WaitStamp)> {
    // Each value on its own: a `MultiValue` of the three cost an allocation a call (about 850
    // instructions, callgrind).
    let Value::Thread(thread) = thread else {
        return None;
    };
    let number = |value: Value| u32::from_lua(value, lua).ok();
    Some((thread, (number(token)?, number(slot)?, number(generation)?)))
}

/// The host's handle on a signal.
///
/// Hand it to scripts as a Lua value (it converts with `IntoLua`), for example as a field of a
/// global; fire it with Rust values. Cloning the handle does not copy the signal. Like the
/// [`Scheduler`](crate::Scheduler), do not store it inside its own `Lua` (app data, userdata).
///
/// A signal is a Lua object (`signal.luau`) that scripts make with `Signal.new(behavior?)` and
/// the host with [`Scheduler::create_signal`](crate::Scheduler::create_signal); [`Signal`] is the host's handle on one, through
/// which it fires Rust values and hands the signal to scripts. Handlers and waiting tasks are
/// kept Lua-side, so a signal costs one mlua handle per [`Signal`] the host holds, however many
/// handlers scripts connect.
///
/// Each handler call is a task of its own: an error in it goes to the error handler (rule 8
/// of the task contract) and a handler may wait or yield. An [`Immediate`](SignalBehavior::Immediate) signal
/// spawns each call at once inside `Fire`; a [`Deferred`](SignalBehavior::Deferred) one defers
/// each call to the next resumption point, and a call whose connection is disconnected before it
/// runs is dropped. `Signal:Wait()` is a wake-token suspension (rule 12): a task resumed by
/// anything else first, or cancelled, is not woken by the fire.
///
/// Handler calls run on reused threads: a thread whose handler returned without yielding runs
/// the next call, so `coroutine.running()` inside a handler names a thread that later calls may
/// share (as with the usual Lua signal libraries). A deferred fire queues one task that calls,
/// in order, each handler still connected when it runs, so [`FrameReport::deferred`] counts
/// one resumption per fire with more than one handler.
///
/// A call of a handler that a task connected is made the way the usual pure-Luau signal pattern
/// makes it, a resume of the reused thread, and becomes a task of the connecting script only
/// when something needs one: it starts a task, connects a handler, waits, blocks in an async
/// function, fails, its script is ended, or the host asks for the running task
/// ([`Scheduler::current_task`](crate::Scheduler::current_task)). So a call that simply returns
/// records nothing in the [trace](crate::Scheduler::start_trace) and costs no task. Under a
/// watchdog ([`SchedulerBuilder::timeout`](crate::SchedulerBuilder::timeout),
/// [`time_slice`](crate::SchedulerBuilder::time_slice)), and for connections the host made,
/// every call is a task from the start.
///
/// What scripts hold carries no internals: a signal table has its `Behavior`, a connection
/// table its `Connected`; the handlers, the list and the waiting tasks are kept out of the
/// scripts' reach.
///
/// [`FrameReport::deferred`]: crate::FrameReport::deferred
///
/// ```
/// use spindle::{Scheduler, SignalBehavior};
///
/// let lua = mlua::Lua::new();
/// let scheduler = Scheduler::new(&lua)?;
/// scheduler.install_task_library()?;
/// let damaged = scheduler.create_signal_with(SignalBehavior::Immediate)?;
/// lua.globals().set("Damaged", &damaged)?;
/// scheduler.spawn(lua.load(r#"
///     health = 100
///     Damaged:Connect(function(amount) health -= amount end)
///     local once = Damaged:Once(function() print("first hit") end)
/// "#).into_function()?, ())?;
/// damaged.fire(30)?;
/// damaged.fire(20)?;
/// assert_eq!(lua.globals().get::<i64>("health")?, 50);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Signal {
    object: Table,
    library: SignalLibrary,
    scheduler: Weak<Inner>,
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Signal").field(&self.object).finish()
    }
}

impl Signal {
    /// Fires the signal with `args`, as `signal:Fire(...)` does. Immediate handlers run before
    /// this returns; when the host fires from outside any task, this is also a resumption
    /// point, so deferred handlers run before it returns too. Errors in handlers go to the
    /// error handler, not here.
    pub fn fire(&self, args: impl IntoLuaMulti) -> Result<()> {
        let lua = self.lua()?;
        let mut args = args.into_lua_multi(&lua)?;
        args.push_front(Value::Table(self.object.clone()));
        self.library.fire.call::<()>(args)?;
        if let Some(scheduler) = self.scheduler.upgrade() {
            scheduler.host_resumption_point(&lua);
        }
        Ok(())
    }

    /// Connects `handler`, as `signal:Connect(handler)`, and returns the connection object
    /// (with `Connected` and `Disconnect`). The connection is the host's, even when made from
    /// a Rust function that a task called: each call of the handler is a task of its own
    /// script, and no [`Scheduler::end_script`](crate::Scheduler::end_script) but that one's
    /// disconnects it.
    pub fn connect(&self, handler: Function) -> Result<Table> {
        Ok(self.library.host_connect.call((&self.object, handler))?)
    }

    /// Disconnects every handler, as `signal:DisconnectAll()`; pending deferred calls are
    /// dropped.
    pub fn disconnect_all(&self) -> Result<()> {
        let disconnect: Function = self.library.methods.raw_get("DisconnectAll")?;
        Ok(disconnect.call(&self.object)?)
    }

    /// Whether handlers run at once or at the next resumption point.
    pub fn behavior(&self) -> SignalBehavior {
        match self.object.raw_get::<String>("Behavior").as_deref() {
            Ok("Immediate") => SignalBehavior::Immediate,
            _ => SignalBehavior::Deferred,
        }
    }

    /// The Lua object scripts see.
    pub fn as_table(&self) -> &Table {
        &self.object
    }

    fn lua(&self) -> Result<Lua> {
        self.object
            .weak_lua()
            .try_upgrade()
            .ok_or_else(|| Error::Lua(mlua::Error::runtime("the signal's Lua state is gone")))
    }
}

impl IntoLua for Signal {
    fn into_lua(self, _: &Lua) -> mlua::Result<Value> {
        Ok(Value::Table(self.object))
    }
}

impl IntoLua for &Signal {
    fn into_lua(self, _: &Lua) -> mlua::Result<Value> {
        Ok(Value::Table(self.object.clone()))
    }
}
