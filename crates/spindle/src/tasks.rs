//! Where tasks live: threads in a Lua table ([`ThreadStore`]), bookkeeping in a flat Rust slab
//! ([`TaskTable`]).
//!
//! Holding an mlua `Thread` in Rust takes a slot on mlua's reference stack, of which there are
//! about a million; a task here is instead an index into a Lua table (`threads[slot]`) and a small
//! [`Slot`] record, so the number of tasks is bounded by memory alone. Handles are made for the
//! moment of a resumption and dropped after it.
//!
//! The two halves are kept apart because touching the Lua table can run the collector, whose
//! finalizers may call back into the scheduler: the slab is changed under the scheduler's state
//! borrow, the Lua table only outside it. A freed slot is therefore reused only after its thread
//! has left the Lua table ([`TaskTable::recycle`]).
//!
//! A thread finds its slot through a mark that the VM keeps on the thread itself (see `vm.rs`),
//! checked against the thread's address kept in the slot, so that finding a task costs no
//! lookup and no memory of its own.
//!
//! Invariants: a slot is occupied exactly while `threads[slot]` holds its thread and that thread
//! carries the slot's mark; freeing a slot clears the mark and bumps the slot's generation,
//! which turns every queued entry that named the old generation stale.

use std::cell::RefCell;
use std::fmt;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};

use mlua::{Lua, Table, Thread};

use crate::vm::{self, ThreadPtr};

/// Identifies one task of one scheduler.
///
/// An id carries the identity of the scheduler that made it, so that it never names a task of
/// another: [`Scheduler::cancel`](crate::Scheduler::cancel) refuses an id of another scheduler
/// with [`Error::ForeignTask`](crate::Error::ForeignTask), and
/// [`Scheduler::status`](crate::Scheduler::status) finds no such task there
/// ([`TaskStatus::Unknown`](crate::TaskStatus::Unknown)). Ids of two schedulers are never
/// equal, not even when the schedulers were never alive at the same time.
///
/// Within its scheduler, the id is a number ([`as_u64`](Self::as_u64), shown by `Display` as
/// `#slot.generation`) that the same run gives the same task every time; it is what traces
/// and their fingerprints record, so that two runs compare equal.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    scheduler: SchedulerId,
    local: u64,
}

/// Tells schedulers apart: a number no other scheduler of the process got, from a
/// process-wide counter (a `u64`, so it never wraps around).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SchedulerId(NonZeroU64);

impl SchedulerId {
    pub(crate) fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        SchedulerId(NonZeroU64::new(id).expect("fewer than 2^64 schedulers"))
    }
}

impl TaskId {
    pub(crate) fn new(scheduler: SchedulerId, slot: u32, generation: u32) -> Self {
        TaskId {
            scheduler,
            local: ((generation as u64) << 32) | slot as u64,
        }
    }

    pub(crate) fn slot(self) -> u32 {
        self.local as u32
    }

    pub(crate) fn generation(self) -> u32 {
        (self.local >> 32) as u32
    }

    pub(crate) fn scheduler(self) -> SchedulerId {
        self.scheduler
    }

    /// The id as one integer, for logs and traces: unique among the tasks of its scheduler,
    /// and the same for the same task when a run is repeated. Tasks of two schedulers may
    /// share it; the `TaskId` itself tells them apart.
    pub fn as_u64(self) -> u64 {
        self.local
    }
}

impl From<&TaskId> for TaskId {
    fn from(id: &TaskId) -> TaskId {
        *id
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.slot(), self.generation())
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TaskId(#{}.{} of scheduler {})",
            self.slot(),
            self.generation(),
            self.scheduler.0
        )
    }
}

/// Why the scheduler holds a suspended task, and what will resume it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Suspension {
    /// Not suspended by the scheduler: running, queued, or yielded to whoever resumes it.
    None,
    /// In `task.wait`; `timed` is false for a wait that never fires (`math.huge`).
    Wait {
        token: u32,
        since: std::time::Duration,
        timed: bool,
    },
    /// Stopped by the watchdog at the end of its time slice, and queued to go on next cycle;
    /// it has run for `ran` since it last yielded of its own accord (its timeout goes on).
    Sliced {
        token: u32,
        ran: std::time::Duration,
    },
    /// Blocked in an mlua async function: the future lives inside the thread and is polled by
    /// resuming the thread when its waker fires.
    LuaFuture { token: u32 },
    /// Blocked in a Spindle async function: the scheduler owns the future and polls it itself.
    OwnedFuture { token: u32 },
}

impl Suspension {
    pub(crate) fn is_awaiting(&self) -> bool {
        matches!(
            self,
            Suspension::LuaFuture { .. } | Suspension::OwnedFuture { .. }
        )
    }
}

/// The Rust half of a task.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    pub generation: u32,
    /// The last token handed out for a suspension of this slot.
    pub token: u32,
    pub suspension: Suspension,
    /// Live timer entries that name this slot and generation.
    pub timers: u32,
    /// Live deferred entries that name this slot and generation.
    pub queued: u32,
    /// The scheduler is resuming this task right now.
    pub running: bool,
    /// How many host `Task` handles claim this task's outcome; kept when it ends if any do.
    pub claims: u32,
    /// The thread is in the scheduler's set of threads that blocked in an mlua future.
    pub in_blocked_set: bool,
    /// The thread, while the slot is occupied.
    thread: Option<ThreadPtr>,
}

impl Slot {
    /// The task's thread; the [`ThreadStore`] keeps it alive while the slot is occupied.
    pub(crate) fn thread(&self) -> Option<ThreadPtr> {
        self.thread
    }

    pub(crate) fn next_token(&mut self) -> u32 {
        self.token = self.token.wrapping_add(1);
        self.token
    }

    /// Whether anything queued will still resume this task.
    pub(crate) fn has_pending(&self) -> bool {
        self.timers > 0 || self.queued > 0 || self.suspension != Suspension::None
    }
}

pub(crate) struct TaskTable {
    /// The scheduler whose ids this table hands out and accepts.
    scheduler: SchedulerId,
    slots: Vec<Slot>,
    free: Vec<u32>,
    occupied: usize,
    /// The generation new slots start at; raised by `reset`, so that ids handed out before it
    /// never match a task made after it.
    first_generation: u32,
}

impl TaskTable {
    pub(crate) fn new(scheduler: SchedulerId) -> Self {
        TaskTable {
            scheduler,
            slots: Vec::new(),
            free: Vec::new(),
            occupied: 0,
            first_generation: 0,
        }
    }

    /// The number of slots ever made, occupied or free.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Gives back the memory of the slab after a burst of tasks. Only valid while no slot is
    /// occupied or waiting to be recycled.
    pub(crate) fn reset(&mut self) {
        debug_assert_eq!(self.occupied, 0);
        let highest = self.slots.iter().map(|s| s.generation).max().unwrap_or(0);
        self.first_generation = self.first_generation.max(highest.wrapping_add(1));
        self.slots = Vec::new();
        self.free = Vec::new();
    }

    /// Whether every slot ever made is free again (none occupied, none waiting to be recycled).
    pub(crate) fn is_idle(&self) -> bool {
        self.occupied == 0 && self.free.len() == self.slots.len()
    }

    /// The slot of `thread`, if it is a task.
    pub(crate) fn find(&self, thread: &Thread) -> Option<TaskId> {
        let slot = vm::slot_mark(thread)?;
        let entry = self.slots.get(slot as usize)?;
        // Another embedder's use of the thread's user data must not alias a task.
        (entry.thread == Some(ThreadPtr::of(thread))).then(|| self.id(slot, entry.generation))
    }

    /// `find` for a raw thread, as a C function of the task library sees it.
    ///
    /// # Safety
    /// `thread` must be alive.
    pub(crate) unsafe fn find_raw(&self, thread: ThreadPtr) -> Option<TaskId> {
        // SAFETY: `thread` is alive (this function's contract), all `slot_mark_raw` asks.
        let slot = unsafe { vm::slot_mark_raw(thread) }?;
        let entry = self.slots.get(slot as usize)?;
        (entry.thread == Some(thread)).then(|| self.id(slot, entry.generation))
    }

    /// The slot of `thread`, making it a task first if it is not one; `true` when the slot is
    /// new, and the caller must then put the thread into the [`ThreadStore`].
    pub(crate) fn reserve(&mut self, thread: &Thread) -> mlua::Result<(TaskId, bool)> {
        if let Some(id) = self.find(thread) {
            return Ok((id, false));
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(self.slots.len())
                    .map_err(|_| mlua::Error::runtime("too many tasks (more than 2^32)"))?;
                self.slots.push(Slot {
                    generation: self.first_generation,
                    token: 0,
                    suspension: Suspension::None,
                    timers: 0,
                    queued: 0,
                    running: false,
                    claims: 0,
                    in_blocked_set: false,
                    thread: None,
                });
                slot
            }
        };
        vm::set_slot_mark(thread, slot);
        self.occupied += 1;
        let entry = &mut self.slots[slot as usize];
        entry.thread = Some(ThreadPtr::of(thread));
        let generation = entry.generation;
        Ok((self.id(slot, generation), true))
    }

    /// The id of this scheduler's task in `slot` at `generation`.
    pub(crate) fn id(&self, slot: u32, generation: u32) -> TaskId {
        TaskId::new(self.scheduler, slot, generation)
    }

    /// Whether `id` was made by this table's scheduler.
    pub(crate) fn owns(&self, id: TaskId) -> bool {
        id.scheduler() == self.scheduler
    }

    /// The slot of a live task; `None` for an id of another scheduler too.
    pub(crate) fn get(&self, id: TaskId) -> Option<&Slot> {
        if !self.owns(id) {
            return None;
        }
        self.slots
            .get(id.slot() as usize)
            .filter(|s| s.thread.is_some() && s.generation == id.generation())
    }

    pub(crate) fn get_mut(&mut self, id: TaskId) -> Option<&mut Slot> {
        if !self.owns(id) {
            return None;
        }
        self.slots
            .get_mut(id.slot() as usize)
            .filter(|s| s.thread.is_some() && s.generation == id.generation())
    }

    /// Frees the slot: its thread loses its mark, and every entry naming this generation turns
    /// stale. The slot is not reused until [`recycle`](Self::recycle), which the caller calls
    /// once the thread has left the [`ThreadStore`] (the store keeps it alive until then).
    /// Returns the freed record, with its counts, for the caller to settle.
    pub(crate) fn free(&mut self, id: TaskId) -> Option<Slot> {
        let slot = self.get_mut(id)?;
        let freed = *slot;
        slot.generation = slot.generation.wrapping_add(1);
        slot.suspension = Suspension::None;
        slot.timers = 0;
        slot.queued = 0;
        slot.running = false;
        slot.claims = 0;
        slot.in_blocked_set = false;
        slot.thread = None;
        if let Some(thread) = freed.thread {
            // SAFETY: the thread store still holds the thread; `recycle` comes after it lets go.
            unsafe { vm::clear_slot_mark(thread) };
        }
        self.occupied -= 1;
        Some(freed)
    }

    /// Makes a freed slot available again.
    pub(crate) fn recycle(&mut self, slot: u32) {
        debug_assert!(self.slots[slot as usize].thread.is_none());
        self.free.push(slot);
    }

    /// Every occupied slot, with its record.
    pub(crate) fn occupied(&self) -> impl Iterator<Item = (TaskId, &Slot)> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.thread.is_some())
            .map(|(i, s)| (self.id(i as u32, s.generation), s))
    }

    pub(crate) fn len(&self) -> usize {
        self.occupied
    }
}

/// The Lua half: `threads[slot + 1]` holds each task's thread, so that the thread lives as long
/// as its task without a Rust handle. Only used outside the scheduler's state borrow.
pub(crate) struct ThreadStore {
    table: RefCell<Table>,
}

impl ThreadStore {
    pub(crate) fn new(lua: &Lua) -> mlua::Result<Self> {
        Ok(ThreadStore {
            table: RefCell::new(lua.create_table()?),
        })
    }

    /// The handle is cloned out first: the call below may run finalizers that come back here.
    fn table(&self) -> Table {
        self.table.borrow().clone()
    }

    pub(crate) fn get(&self, slot: u32) -> mlua::Result<Thread> {
        self.table().raw_get(slot as i64 + 1)
    }

    pub(crate) fn set(&self, slot: u32, thread: &Thread) -> mlua::Result<()> {
        self.table().raw_set(slot as i64 + 1, thread)
    }

    pub(crate) fn clear(&self, slot: u32) {
        // Setting an existing entry to nil cannot fail for want of memory.
        let _ = self.table().raw_set(slot as i64 + 1, mlua::Nil);
    }

    /// Starts afresh with an empty table (Lua never shrinks the old one's array).
    pub(crate) fn replace(&self, table: Table) {
        *self.table.borrow_mut() = table;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlua::Lua;

    fn thread(lua: &Lua) -> Thread {
        lua.create_thread(lua.create_function(|_, ()| Ok(())).unwrap())
            .unwrap()
    }

    #[test]
    fn reserved_threads_are_found_and_forgotten_when_freed() {
        let lua = Lua::new();
        let mut table = TaskTable::new(SchedulerId::fresh());
        let (a, b) = (thread(&lua), thread(&lua));
        let (id_a, new_a) = table.reserve(&a).unwrap();
        let (id_b, _) = table.reserve(&b).unwrap();
        assert!(new_a);
        assert_ne!(id_a, id_b);
        assert_eq!(
            table.reserve(&a).unwrap(),
            (id_a, false),
            "the same task twice"
        );
        assert_eq!(table.find(&b), Some(id_b));
        assert!(table.free(id_a).is_some());
        assert_eq!(table.find(&a), None);
        assert!(table.get(id_a).is_none(), "the old id is stale");
        let (id_c, _) = table.reserve(&thread(&lua)).unwrap();
        assert_ne!(id_c.slot(), id_a.slot(), "a freed slot waits for recycle");
        table.recycle(id_a.slot());
        let (id_d, _) = table.reserve(&thread(&lua)).unwrap();
        assert_eq!(id_d.slot(), id_a.slot(), "then it is reused");
        assert_ne!(id_d, id_a, "under a new generation");
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn a_mark_that_another_thread_carries_does_not_alias_a_task() {
        let lua = Lua::new();
        let mut table = TaskTable::new(SchedulerId::fresh());
        let task = thread(&lua);
        let (id, _) = table.reserve(&task).unwrap();
        let stranger = thread(&lua);
        vm::set_slot_mark(&stranger, id.slot());
        assert_eq!(table.find(&stranger), None);
        assert_eq!(table.find(&task), Some(id));
    }
}
