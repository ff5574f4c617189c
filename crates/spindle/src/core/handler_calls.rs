//! Signal handler calls that are no task unless they need to be.
//!
//! An immediate handler's call runs on a reused runner thread (`signal.luau`). Most calls
//! return without meeting the scheduler, and for those the engine makes no task: the call is a
//! *handler frame*, an entry of `resuming` (so that it nests as a resumption does) that names
//! the connecting task and its script. The first time anything needs the call to be a task (it
//! starts a task, connects a handler, waits, fails, its script is ended, the host asks which
//! task is running), the engine makes it one on the spot ([`Core::make_handler_task`]): a task
//! of the connecting task's script, started by the connecting task, already running, whose
//! resumption then ends as any other's does.
//!
//! Invariant: a handler frame's `resuming` entry stands for no task while `task` is `None`, so
//! nothing reads it as one: [`Core::insert_from`] of the running task's origin, and the engine's
//! `resuming_task` readers, make the frame a task first.

use super::{Core, Lineage, NotMade, TaskId};

/// One handler call in progress.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HandlerFrame<T> {
    /// Its entry's index in `resuming`.
    depth: usize,
    /// The runner thread the handler runs on.
    pub(crate) runner: T,
    /// The numbers of the connecting task and its script: the frame's `resuming` entry
    /// until the call is a task.
    connection: [u64; 2],
    /// The task the call was made, and the token its resumption started under.
    task: Option<(TaskId, u32)>,
}

impl<T: Copy + PartialEq, O> Core<T, O> {
    /// Whether the innermost resumption is a handler call that is no task yet.
    #[inline]
    pub(crate) fn handler_on_top(&self) -> bool {
        self.handlers
            .last()
            .is_some_and(|frame| frame.task.is_none() && frame.depth + 1 == self.resuming.len())
    }

    /// Whether any handler call that is no task yet is in progress.
    #[inline]
    pub(crate) fn has_handler_frames(&self) -> bool {
        !self.handlers.is_empty()
    }

    /// A handler call begins on `runner`, for the connection made by the task numbered
    /// `creator` in the script numbered `script`. Refused (false) while that script is being
    /// ended: the call then takes the general path, which refuses it.
    pub(crate) fn enter_handler(&mut self, runner: T, creator: u64, script: u64) -> bool {
        if !self.ending.is_empty() && self.ending.contains(&self.tasks.id_of_number(script)) {
            return false;
        }
        self.handlers.push(HandlerFrame {
            depth: self.resuming.len(),
            runner,
            connection: [creator, script],
            task: None,
        });
        self.resuming.push([creator, script]);
        true
    }

    /// The innermost handler call ended: `None` if it never became a task (its frame is gone),
    /// or its task and token, whose resumption the caller ends with
    /// [`end_resumption`](Self::end_resumption).
    pub(crate) fn leave_handler(&mut self) -> Option<(TaskId, u32)> {
        let frame = self.handlers.pop()?;
        debug_assert_eq!(frame.depth + 1, self.resuming.len(), "innermost first");
        if frame.task.is_none() {
            self.resuming.pop();
        }
        frame.task
    }

    /// The indexes (into the handler frames) of the calls that are no task yet and are of
    /// the script `script`, or of every one for `None`; innermost last.
    pub(crate) fn handler_frames_of(&self, script: Option<TaskId>) -> Vec<usize> {
        let number = script.map(TaskId::as_u64);
        self.handlers
            .iter()
            .enumerate()
            .filter(|(_, frame)| {
                frame.task.is_none() && number.is_none_or(|n| frame.connection[1] == n)
            })
            .map(|(index, _)| index)
            .collect()
    }

    /// The index of the handler call running on `runner` that is no task yet, if any.
    pub(crate) fn handler_frame_on(&self, runner: T) -> Option<usize> {
        self.handlers
            .iter()
            .rposition(|frame| frame.task.is_none() && frame.runner == runner)
    }

    /// Makes the handler call at `index` a task: its runner's, started by the connecting task
    /// in its script, running, its resumption started. Returns the task, with the frame (for
    /// its runner). `None` if the frame is a task already or gone.
    pub(crate) fn make_handler_task(
        &mut self,
        index: usize,
    ) -> Option<Result<(TaskId, HandlerFrame<T>), NotMade>> {
        let frame = *self.handlers.get(index)?;
        if frame.task.is_some() {
            return None;
        }
        let [creator, script] = frame.connection;
        let lineage = Lineage {
            creator: Some(self.tasks.id_of_number(creator)),
            script: Some(self.tasks.id_of_number(script)),
        };
        let Some(id) = self.tasks.insert(frame.runner, lineage) else {
            return Some(Err(NotMade::TooMany));
        };
        let slot = self.tasks.get_mut(id)?;
        slot.running = true;
        let token = slot.next_token();
        self.resuming[frame.depth] = [id.as_u64(), script];
        self.handlers[index].task = Some((id, token));
        Some(Ok((id, frame)))
    }

    /// Undoes [`make_handler_task`](Self::make_handler_task) for a task the engine could not
    /// keep (it failed to store the thread): the frame stands for no task again.
    pub(crate) fn unmake_handler_task(&mut self, index: usize, id: TaskId) {
        let Some(frame) = self.handlers.get_mut(index) else {
            return;
        };
        frame.task = None;
        self.resuming[frame.depth] = frame.connection;
        if self.free(id).is_some() {
            self.recycle(id.slot());
        }
    }
}
