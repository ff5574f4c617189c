//! Immediate signal handler calls on runner threads, the engine's side of
//! `core/handler_calls.rs` and `vm/handler_call.rs`.
//!
//! A handler's call is a task of the connecting task's script (contract rule 24), but one that
//! returns without meeting the scheduler needs no task: it runs as a *handler frame*, resumed
//! straight from `signal.luau` through `lua_resume`, and costs what the usual pure-Luau signal
//! pattern costs. The frame becomes a task, its runner's, the first time anything needs the
//! call to be one: it makes a task or a connection (its lineage), waits on the scheduler or
//! blocks in a future (its runner becomes its suspended thread), fails (its error is reported
//! as a task's, rule 8, and memory comes back, rule 23), its script is ended (rule 24: it is
//! doomed as a running task is), or the host asks for the running task. From then on it is
//! filed as any task whose resumption ended.
//!
//! The lane is closed under a watchdog: its timeouts and time slices (rules 21-22) watch each
//! resumption through mlua's path, so under one each call is a task from the start
//! (`spawn_as`). It is closed while the timeline records too, so that every handler call is a
//! span of its own with its cause (the timeline is a tool for a run being looked at). It stays open under `SchedulerBuilder::general_path_only`, which is about how
//! the scheduler resumes its tasks: a call that never became a task is none of them, and a run
//! must trace the same both ways.

use mlua::{Lua, Thread};

use super::Inner;
use crate::core::NotMade;
use crate::trace::TraceEvent;
use crate::vm::handler_call::{self, Back, Entry};
use crate::vm::{self, RawResumed, ThreadPtr};

impl Inner {
    /// A handler call on `runner` begins, for a connection of the task and script numbered
    /// `creator` and `script` (`vm::handler_call`'s `enter`).
    pub(crate) fn enter_handler(&self, runner: ThreadPtr, creator: u64, script: u64) -> Entry {
        if !self.watchdog.is_unlimited() || self.closed.get() || self.timeline.is_on() {
            return Entry::Closed;
        }
        // A runner that a script made a task of (`task.spawn` of the thread it got from
        // `coroutine.running()`) is that task's now.
        // SAFETY: the caller holds the runner as its argument, so it is alive.
        if unsafe { self.find_raw(runner) }.is_some() {
            return Entry::BadRunner;
        }
        let entered = self.try_core(move |core| core.enter_handler(runner, creator, script));
        if entered == Some(true) {
            Entry::Entered
        } else {
            Entry::Closed
        }
    }

    /// The handler call on `runner` is over (`vm::handler_call`'s `leave`): a call that never
    /// became a task and returned leaves nothing behind; one that yielded by itself leaves its
    /// runner to whoever resumes it (rule 11), as a task's plain yield would. Anything else is
    /// filed as the task's resumption.
    pub(crate) fn leave_handler(&self, runner: ThreadPtr, back: Back) {
        let needs_task = matches!(back, Back::Pending | Back::Ended(_));
        let lua = needs_task.then(|| self.threads.lua()).flatten();
        if let (true, Some(lua)) = (needs_task, &lua) {
            if let Some(index) = self.core(move |core| core.handler_frame_on(runner)) {
                // At the memory limit that the handler may have just reached.
                let made =
                    vm::with_memory_limit_lifted(lua, || self.make_handler_task(lua, index, None));
                if let Err(error) = made {
                    self.report(crate::error::TaskError::from_lua(None, &error));
                }
            }
        }
        let Some((id, token)) = self.core(|core| core.leave_handler()) else {
            if self.closed.get() && !self.core(|core| core.is_resuming()) {
                if let Some(lua) = self.threads.lua() {
                    let _ = self.shutdown(&lua);
                }
            }
            return;
        };
        let Some(lua) = lua.or_else(|| self.threads.lua()) else {
            self.core(|core| core.end_resumption(id));
            return;
        };
        let resumed = match back {
            Back::Done | Back::Yielded => RawResumed::Yielded { pending: false },
            Back::Pending => RawResumed::Yielded { pending: true },
            Back::Ended(0) => RawResumed::Finished,
            Back::Ended(status) => RawResumed::Failed(status),
        };
        self.finish_raw_resumption(&lua, id, token, runner, resumed);
    }

    /// Makes the handler call at `index` (of the core's frames) a task, with `runner` the
    /// handle on its runner when the caller has one. Returns the task; `None` if the frame is
    /// one already.
    fn make_handler_task(
        &self,
        lua: &Lua,
        index: usize,
        runner: Option<&Thread>,
    ) -> mlua::Result<Option<crate::core::TaskId>> {
        let (id, frame) = match self.core(|core| core.make_handler_task(index)) {
            None => return Ok(None),
            Some(Err(not_made)) => return Err(not_made_error(not_made)),
            Some(Ok(made)) => made,
        };
        let thread = match runner {
            Some(thread) => Ok(thread.clone()),
            // SAFETY: the frame is in progress: its caller holds the runner, which is running,
            // normal (it resumed the running code) or dead (it failed).
            None => unsafe { handler_call::runner_handle(lua, frame.runner) },
        };
        let stored = thread.and_then(|thread| {
            vm::set_slot_mark(&thread, id.slot());
            self.threads.set(id.slot(), &thread).inspect_err(|_| {
                // SAFETY: the handle keeps the thread alive.
                unsafe { vm::clear_slot_mark(ThreadPtr::of(&thread)) };
            })
        });
        if let Err(error) = stored {
            self.core(|core| core.unmake_handler_task(index, id));
            return Err(error);
        }
        self.record(Some(id), TraceEvent::Resume);
        Ok(Some(id))
    }

    /// Makes the innermost resumption a task if it is a handler call that is none yet: before
    /// anything reads the running task (a task made now, a connection).
    pub(crate) fn make_running_handler_task(&self, lua: &Lua) -> mlua::Result<()> {
        let top = self.core(|core| core.handler_on_top().then(|| core.handler_frames_of(None)));
        if let Some(index) = top.and_then(|frames| frames.last().copied()) {
            self.make_handler_task(lua, index, None)?;
        }
        Ok(())
    }

    /// Makes every handler call of `script` in progress a task, so that ending the script
    /// finds them running (they are doomed, as its other running tasks are).
    pub(crate) fn make_handler_tasks_of(
        &self,
        lua: &Lua,
        script: crate::core::TaskId,
    ) -> mlua::Result<()> {
        let frames = self.core(|core| core.handler_frames_of(Some(script)));
        for index in frames {
            self.make_handler_task(lua, index, None)?;
        }
        Ok(())
    }

    /// The task of a handler call running on `thread`, made now, if there is one: `find`'s
    /// answer for a runner in the middle of a call.
    pub(crate) fn find_handler_task(&self, thread: &Thread) -> Option<crate::core::TaskId> {
        let ptr = ThreadPtr::of(thread);
        let index = self.try_core(move |core| {
            core.has_handler_frames()
                .then(|| core.handler_frame_on(ptr))
                .flatten()
        })??;
        let lua = thread.weak_lua().try_upgrade()?;
        self.make_handler_task(&lua, index, Some(thread))
            .ok()
            .flatten()
    }
}

/// The error of a task the core would not make.
pub(super) fn not_made_error(not_made: NotMade) -> mlua::Error {
    match not_made {
        NotMade::TooMany => mlua::Error::runtime("too many tasks (more than 2^32)"),
        NotMade::ScriptEnding(script) => mlua::Error::runtime(format!(
            "the script {script} was ended by the host: it starts no more tasks"
        )),
        NotMade::HandlerCall => mlua::Error::runtime("the running handler call is no task"),
    }
}
