//! The host's task list: every task the scheduler knows, where it stands and where it was made
//! ([`Scheduler::tasks`](crate::Scheduler::tasks)), and its traceback on demand.
//!
//! The core knows a task's suspension but not two things the list shows, which are kept here,
//! by slot, beside it: the place each task was created (recorded only when the host asks,
//! [`SchedulerBuilder::record_creation_sites`](crate::SchedulerBuilder::record_creation_sites):
//! reading the stack at every spawn costs more than a spawn is worth otherwise), and which
//! untimed waits are `Signal:Wait`s rather than `task.wait(math.huge)`s.
//!
//! Invariant: a note names the generation of the task it was made for (and a signal note the
//! token of its wait), so a note left by a freed task, or by a wait that ended, is never read
//! as another's: no note needs to be removed when its task or wait ends.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use mlua::{Lua, Thread, WeakLua};

use super::Inner;
use crate::core::{Suspension, TaskId, TaskView};
use crate::vm;

/// Where a task was created: the script's chunk name and line.
///
/// For a task a script made (`task.spawn`, `defer`, `delay`, a signal handler's call, a
/// coroutine that became a task by waiting), the line that made it; for one the host started
/// from Rust, the first line of its function.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CreationSite {
    /// The chunk's name as tracebacks show it (`main.luau`, `[string "..."]`).
    pub source: Arc<str>,
    /// The line, counting from 1; 0 when Luau knows none.
    pub line: u32,
}

impl fmt::Display for CreationSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}", self.source),
            line => write!(f, "{}:{line}", self.source),
        }
    }
}

/// Where a task stands, in a [`TaskInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskState {
    /// The scheduler is resuming it now (or it resumed, by hand, the coroutine that runs).
    Running,
    /// It will run in the coming cycle: its wait ended, or the watchdog stopped it at the end
    /// of its time slice.
    Ready,
    /// A deferred resumption is queued for it (`task.defer`): it runs at the next resumption
    /// point.
    Deferred,
    /// In `task.wait` until the scheduler's clock reads `until`; `None` for a wait no timer
    /// ends (`task.wait(math.huge)`).
    Waiting {
        /// The deadline, on the scheduler's clock ([`Clock::now`](crate::Clock::now)).
        until: Option<Duration>,
    },
    /// A `task.delay` will resume it when the scheduler's clock reads `until`.
    Delayed {
        /// The deadline, on the scheduler's clock.
        until: Duration,
    },
    /// In `Signal:Wait`: only a fire of that signal resumes it.
    WaitingOnSignal,
    /// Blocked in a Rust future (an async function), until its waker fires.
    BlockedOnFuture,
    /// It left the scheduler with a plain `coroutine.yield`, and a host handle still claims it
    /// (contract rule 11): its thread belongs to whoever resumes it. Such a thread that no
    /// handle claims is no task any more, and is not listed.
    Yielded,
    /// The scheduler holds it, but nothing is queued to resume it: it is being made a task.
    Idle,
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskState::Running => f.write_str("running"),
            TaskState::Ready => f.write_str("ready"),
            TaskState::Deferred => f.write_str("deferred"),
            TaskState::Waiting { until: Some(at) } => {
                write!(f, "waiting until {:.3} s", at.as_secs_f64())
            }
            TaskState::Waiting { until: None } => f.write_str("waiting for ever"),
            TaskState::Delayed { until } => {
                write!(f, "delayed until {:.3} s", until.as_secs_f64())
            }
            TaskState::WaitingOnSignal => f.write_str("waiting on a signal"),
            TaskState::BlockedOnFuture => f.write_str("blocked in a Rust future"),
            TaskState::Yielded => f.write_str("suspended by coroutine.yield"),
            TaskState::Idle => f.write_str("idle"),
        }
    }
}

impl TaskState {
    /// Whether nothing the scheduler holds will ever resume the task: a wait no timer ends, a
    /// signal wait, a plain yield. At the end of a run (no timer, deferral or future left),
    /// such a task is stuck for good.
    pub fn waits_for_ever(&self) -> bool {
        matches!(
            self,
            TaskState::Waiting { until: None } | TaskState::WaitingOnSignal | TaskState::Yielded
        )
    }
}

/// One task of [`Scheduler::tasks`](crate::Scheduler::tasks).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskInfo {
    /// The task.
    pub id: TaskId,
    /// Where it stands.
    pub state: TaskState,
    /// The task that started it ([`Scheduler::creator_of`](crate::Scheduler::creator_of));
    /// `None` for a task the host started.
    pub creator: Option<TaskId>,
    /// Its script ([`Scheduler::script_of`](crate::Scheduler::script_of)).
    pub script: Option<TaskId>,
    /// Where it was created, when the scheduler records creation sites.
    pub site: Option<CreationSite>,
}

/// What the list keeps beside the core, by slot.
#[derive(Default)]
pub(crate) struct Notes {
    /// Whether creation sites are recorded; the `Lua` to read the running stack from.
    sites_from: RefCell<Option<WeakLua>>,
    recording: Cell<bool>,
    by_slot: RefCell<Vec<Note>>,
    /// Chunk names, shared by every site in the chunk.
    sources: RefCell<HashMap<Box<[u8]>, Arc<str>>>,
}

#[derive(Clone, Default)]
struct Note {
    /// The generation of the task the site was recorded for.
    site_generation: u32,
    site: Option<CreationSite>,
    /// The generation and the wait token of the task's last `Signal:Wait`.
    signal_wait: Option<(u32, u32)>,
}

impl Notes {
    pub(crate) fn record_sites(&self, lua: Option<&Lua>) {
        self.recording.set(lua.is_some());
        *self.sites_from.borrow_mut() = lua.map(Lua::weak);
    }

    fn note(&self, slot: u32, edit: impl FnOnce(&mut Note)) {
        let mut notes = self.by_slot.borrow_mut();
        let index = slot as usize;
        if index >= notes.len() {
            notes.resize_with(index + 1, Note::default);
        }
        edit(&mut notes[index]);
    }

    fn site_of(&self, id: TaskId) -> Option<CreationSite> {
        let notes = self.by_slot.borrow();
        let note = notes.get(id.slot() as usize)?;
        (note.site_generation == id.generation())
            .then(|| note.site.clone())
            .flatten()
    }

    fn signal_token(&self, id: TaskId) -> Option<u32> {
        let notes = self.by_slot.borrow();
        match notes.get(id.slot() as usize)?.signal_wait {
            Some((generation, token)) if generation == id.generation() => Some(token),
            _ => None,
        }
    }

    fn site(&self, source: &[u8], line: u32) -> CreationSite {
        let mut sources = self.sources.borrow_mut();
        let source = match sources.get(source) {
            Some(known) => known.clone(),
            None => {
                let name: Arc<str> = String::from_utf8_lossy(source).into();
                sources.insert(source.into(), name.clone());
                name
            }
        };
        CreationSite { source, line }
    }

    /// Forgets every note, once no task is left (the slots start again from 0).
    pub(crate) fn clear(&self) {
        *self.by_slot.borrow_mut() = Vec::new();
    }
}

impl Inner {
    /// Records where the new task `id`, for `thread`, is being made, when the host asked for
    /// creation sites. Inlined, so that the check costs a flag read when it did not.
    #[inline(always)]
    pub(super) fn note_creation(&self, id: TaskId, thread: &Thread) {
        if self.notes.recording.get() {
            self.note_creation_site(id, thread);
        }
    }

    #[cold]
    fn note_creation_site(&self, id: TaskId, thread: &Thread) {
        let lua = self
            .notes
            .sites_from
            .borrow()
            .as_ref()
            .and_then(WeakLua::try_upgrade);
        let Some(lua) = lua else {
            return;
        };
        let site = vm::script_position(&lua, |source, line| self.notes.site(source, line))
            .or_else(|| vm::defined_at(thread, |source, line| self.notes.site(source, line)));
        self.notes.note(id.slot(), |note| {
            note.site_generation = id.generation();
            note.site = site;
        });
    }

    /// Marks the task's wait under `token` as a `Signal:Wait`.
    pub(super) fn note_signal_wait(&self, id: TaskId, token: u32) {
        self.notes.note(id.slot(), |note| {
            note.signal_wait = Some((id.generation(), token));
        });
    }

    /// Where the task was created, if the scheduler recorded it and holds the task.
    pub(crate) fn creation_site(&self, id: TaskId) -> Option<CreationSite> {
        self.notes.site_of(id)
    }

    /// Every task the scheduler knows, in slot order.
    pub(crate) fn census(&self) -> Vec<TaskInfo> {
        let views = self.core(|core| core.census());
        views.into_iter().map(|view| self.info(view)).collect()
    }

    fn info(&self, view: TaskView) -> TaskInfo {
        let state = match view.held {
            None => TaskState::Yielded,
            Some(held) if held.running => TaskState::Running,
            Some(held) if held.deferred => TaskState::Deferred,
            Some(held) => match held.suspension {
                Suspension::Sliced { .. } => TaskState::Ready,
                Suspension::LuaFuture { .. } | Suspension::OwnedFuture { .. } => {
                    TaskState::BlockedOnFuture
                }
                Suspension::Wait { timed: true, .. } => match held.deadline {
                    Some(until) => TaskState::Waiting { until: Some(until) },
                    // Taken off the heap for the frame's carried work: it runs next.
                    None => TaskState::Ready,
                },
                Suspension::Wait { token, .. }
                    if self.notes.signal_token(view.id) == Some(token) =>
                {
                    TaskState::WaitingOnSignal
                }
                Suspension::Wait { .. } => TaskState::Waiting { until: None },
                Suspension::None => match held.deadline {
                    Some(until) if held.delayed => TaskState::Delayed { until },
                    _ if held.delayed => TaskState::Ready,
                    _ => TaskState::Idle,
                },
            },
        };
        TaskInfo {
            id: view.id,
            state,
            creator: view.lineage.creator,
            script: view.lineage.script,
            site: self.notes.site_of(view.id),
        }
    }

    /// The traceback of the task's thread, as an error's is written (`stack traceback:` and a
    /// line a level), for a task the scheduler holds or a released one a handle claims.
    /// Reading it runs no Lua.
    pub(crate) fn traceback_of(&self, lua: &Lua, id: TaskId) -> Option<String> {
        let thread = self.thread_of(id).or_else(|| self.released_thread(id))?;
        vm::traceback(lua, &thread).ok()
    }
}
