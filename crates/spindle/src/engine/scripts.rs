//! Scripts: every task belongs to the script of the task that started it, and the host can end
//! a script's tasks in one call (`Scheduler::end_script`), as destroying a `Script` does in
//! Roblox.
//!
//! The core records each task's creator and script (`core::Lineage`). Ending a script cancels
//! each of its tasks that nothing is running; the ones that are running (the caller's own task,
//! the tasks that resumed it) cannot be closed under their own feet: they are *doomed*, and
//! end when their resumption does (`settle_doomed`).
//!
//! Invariant: while a script is being ended, and until its doomed tasks have ended, the core
//! makes no task in it, so no sweep ever misses a task that appeared behind it.

use mlua::thread::ThreadStatus;
use mlua::{Lua, Value};

use super::{Inner, Lineage, Origin, TaskId};

/// A script the host ended whose running tasks end when their resumptions do.
pub(crate) struct Doomed {
    script: TaskId,
    running: Vec<TaskId>,
}

/// What ending a script's tasks did.
#[derive(Default)]
pub(crate) struct TasksEnded {
    /// Tasks cancelled at once.
    pub(crate) cancelled: usize,
    /// Tasks that were running: they end as soon as their resumption does.
    pub(crate) running: usize,
}

impl Inner {
    /// Who started the live task `id`, and its script.
    pub(crate) fn lineage(&self, id: TaskId) -> Option<Lineage> {
        self.core(|core| core.lineage(id))
    }

    /// The Lua value that stands for a task in signal connections (a light userdata holding
    /// its number, so that no script can make one; see [`task_of_key`](Self::task_of_key)).
    /// Where pointers are narrower than task numbers, a float, exact while a slot was reused
    /// fewer than 2^21 times.
    pub(crate) fn task_key(id: TaskId) -> Value {
        if cfg!(target_pointer_width = "64") {
            Value::LightUserData(mlua::LightUserData(id.as_u64() as usize as *mut _))
        } else {
            Value::Number(id.as_u64() as f64)
        }
    }

    /// The task a value from [`task_key`](Self::task_key) stands for; `None` for anything else.
    pub(crate) fn task_of_key(&self, key: &Value) -> Option<TaskId> {
        let number = match key {
            Value::LightUserData(pointer) => pointer.0 as usize as u64,
            Value::Number(number) => *number as u64,
            _ => return None,
        };
        Some(self.core(|core| core.id(number as u32, (number >> 32) as u32)))
    }

    /// The lineage of a task made on behalf of the task and script `keys` stand for (a root
    /// when they stand for none: a connection the host made).
    pub(crate) fn origin_of_keys(&self, task: &Value, script: &Value) -> Origin {
        Origin::Given(Lineage {
            creator: self.task_of_key(task),
            script: self.task_of_key(script),
        })
    }

    /// The task being resumed and its script, for a signal connection made now: `None` outside
    /// any resumption (the host's). Refused while its script is being ended.
    pub(crate) fn connecting_task(&self) -> mlua::Result<Option<(TaskId, TaskId)>> {
        let owner = self.core(|core| {
            let task = core.resuming_task()?;
            let script = core
                .lineage(task)
                .and_then(|lineage| lineage.script)
                .unwrap_or(task);
            Some((task, script, core.is_ending(script)))
        });
        match owner {
            Some((_, script, true)) => Err(mlua::Error::runtime(format!(
                "the script {script} was ended by the host: it connects no more handlers"
            ))),
            Some((task, script, false)) => Ok(Some((task, script))),
            None => Ok(None),
        }
    }

    /// Marks `script` as being ended: no task is made in it from now on. Returns false if it
    /// was being ended already (an outer call, or doomed tasks still running).
    pub(crate) fn start_ending(&self, script: TaskId) -> bool {
        self.core(|core| core.start_ending(script))
    }

    /// Cancels every task of `script` that nothing runs; dooms the running ones. `started`:
    /// this call marked the script as being ended ([`start_ending`](Self::start_ending)), and
    /// unmarks it if no task was left running. Returns what it did, and the first error met
    /// (closing a thread can fail for memory); the other tasks are ended all the same.
    pub(crate) fn end_script_tasks(
        &self,
        lua: &Lua,
        script: TaskId,
        started: bool,
    ) -> (TasksEnded, Option<mlua::Error>) {
        // Its handler calls in progress are running tasks of it, doomed as the others are.
        let made = self.make_handler_tasks_of(lua, script);
        let (ended, running, mut error) = self.sweep_script(lua, script);
        if let Err(made) = made {
            error.get_or_insert(made);
        }
        if !running.is_empty() {
            let mut doomed = self.doomed.borrow_mut();
            match doomed.iter_mut().find(|d| d.script == script) {
                Some(known) => {
                    for id in &running {
                        if !known.running.contains(id) {
                            known.running.push(*id);
                        }
                    }
                }
                None => doomed.push(Doomed {
                    script,
                    running: running.clone(),
                }),
            }
            self.any_doomed.set(true);
        } else if started {
            self.core(|core| core.stop_ending(script));
        }
        let report = TasksEnded {
            cancelled: ended,
            running: running.len(),
        };
        (report, error)
    }

    /// Cancels the tasks of `script` that nothing runs, and returns how many, with the ones
    /// that are running.
    fn sweep_script(&self, lua: &Lua, script: TaskId) -> (usize, Vec<TaskId>, Option<mlua::Error>) {
        let tasks = self.core(|core| core.tasks_of_script(script));
        let mut cancelled = 0;
        let mut running = Vec::new();
        let mut first_error = None;
        for id in tasks {
            // An end hook told of an earlier one may have ended this one meanwhile.
            let Some(scheduled) = self.core(|core| core.task(id).map(|slot| slot.is_running()))
            else {
                continue;
            };
            let thread = match self.threads.get(id.slot()) {
                Ok(thread) => thread,
                Err(error) => {
                    first_error.get_or_insert(error);
                    continue;
                }
            };
            let in_use = matches!(
                thread.status(),
                ThreadStatus::Running | ThreadStatus::Normal
            );
            if scheduled || in_use {
                running.push(id);
                continue;
            }
            match self.cancel(lua, &thread) {
                Ok(()) => cancelled += 1,
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        (cancelled, running, first_error)
    }

    /// A resumption of `after` ended (`None`: a cycle begins): the doomed tasks of a script
    /// whose running tasks have all left their resumptions are cancelled now, and the script
    /// may have tasks again. Checked when the task that ended was doomed, and whenever no
    /// resumption is left (a task a script resumed by hand is running in none of them).
    pub(crate) fn settle_doomed(&self, lua: &Lua, after: Option<TaskId>) {
        if !self.any_doomed.get() {
            return;
        }
        let outermost = !self.core(|core| core.is_resuming());
        let due: Vec<TaskId> = self
            .doomed
            .borrow()
            .iter()
            .filter(|d| outermost || after.is_some_and(|id| d.running.contains(&id)))
            .map(|d| d.script)
            .collect();
        for script in due {
            if self.still_running(script) {
                continue;
            }
            self.doomed.borrow_mut().retain(|d| d.script != script);
            // The doomed tasks went on until now; what they left suspended ends here. Errors
            // (closing a thread at the memory limit) are the closing's own, already lifted.
            let (_, running, _) = self.sweep_script(lua, script);
            if running.is_empty() {
                self.core(|core| core.stop_ending(script));
            } else {
                self.doomed.borrow_mut().push(Doomed { script, running });
            }
        }
        let any = !self.doomed.borrow().is_empty();
        self.any_doomed.set(any);
    }

    /// Whether a doomed task of `script` is still being run (by the scheduler or by hand).
    fn still_running(&self, script: TaskId) -> bool {
        let running = self
            .doomed
            .borrow()
            .iter()
            .find(|d| d.script == script)
            .map(|d| d.running.clone())
            .unwrap_or_default();
        running.into_iter().any(|id| {
            let Some(scheduled) = self.core(|core| core.task(id).map(|slot| slot.is_running()))
            else {
                return false;
            };
            scheduled
                || self.threads.get(id.slot()).is_ok_and(|thread| {
                    matches!(
                        thread.status(),
                        ThreadStatus::Running | ThreadStatus::Normal
                    )
                })
        })
    }
}
