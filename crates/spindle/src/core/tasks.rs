//! The task table: a flat slab of [`Slot`] records, one per task, addressed by [`TaskId`].
//!
//! A task's thread lives Lua-side (the engine's thread store); here a slot holds only the
//! thread's identity `T` (its address, for the engine), which the core compares and hands back
//! but never uses. Freeing a slot bumps its generation, which turns every queued entry that
//! named the old generation stale; a freed slot is reused only after [`TaskTable::recycle`],
//! which the engine calls once the thread has left its Lua-side store.
//!
//! A task that leaves the scheduler without ending while a host handle claims it (a plain
//! `coroutine.yield`) keeps its slot, reserved for its thread, under the same generation: if
//! the thread becomes a task again before the host lets go, it gets its id back
//! ([`TaskTable::reclaim`]). A reserved slot holds no thread and nothing names it live (its
//! task was idle: no timer, deferral or suspension left), so keeping the generation revives
//! no stale entry; tokens go on counting across it.
//!
//! Invariants: a slot is occupied exactly while it holds a thread; `occupied` counts them; a
//! slot is in `free` only once it was freed and recycled; a reserved slot is neither occupied
//! nor free.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

/// A map keyed by task id, hashed by [`IdHasher`].
pub(crate) type TaskMap<V> = HashMap<TaskId, V, BuildHasherDefault<IdHasher>>;

/// Hashes task ids by multiplication: ids are the scheduler's own numbers, never chosen by a
/// script, so no adversary can aim at one bucket, and the default SipHash cost about 1,000
/// instructions of each `net.serve` request (a claim taken and let go; callgrind).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // The multiplier of FxHash, from Firefox and rustc: an odd constant whose high bits,
        // which hashbrown uses, mix every bit of the input.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Tells schedulers apart: a number no other scheduler of the process got, from a
/// process-wide counter (a `u64`, so it never wraps around).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SchedulerId(pub(super) NonZeroU64);

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

/// Who started a task, and the script it belongs to (contract rule 24).
///
/// A task's *creator* is the task the scheduler was running when it became a task (a coroutine
/// a script resumes by hand counts as the task that resumed it); the host starts roots, which
/// have none. A task's *script* is the root at the end of its chain of creators: a root is
/// its own script, and a signal handler's task belongs to the connecting task's script.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Lineage {
    /// `None` for a root.
    pub(crate) creator: Option<TaskId>,
    /// `None` when starting a root: the task is its own script.
    pub(crate) script: Option<TaskId>,
}

impl TaskId {
    /// The id of this scheduler's task whose number is `local`.
    pub(crate) fn of(scheduler: SchedulerId, local: u64) -> Self {
        TaskId { scheduler, local }
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
        since: Duration,
        timed: bool,
    },
    /// Stopped by the watchdog at the end of its time slice, and queued to go on next cycle;
    /// it has run for `ran` since it last yielded of its own accord (its timeout goes on).
    Sliced { token: u32, ran: Duration },
    /// Blocked in an mlua async function: the future lives inside the thread and is polled by
    /// resuming the thread when its waker fires.
    LuaFuture { token: u32 },
    /// Blocked in a Spindle async function: the engine owns the future and polls it itself.
    OwnedFuture { token: u32 },
}

impl Suspension {
    pub(crate) fn is_awaiting(&self) -> bool {
        matches!(
            self,
            Suspension::LuaFuture { .. } | Suspension::OwnedFuture { .. }
        )
    }

    /// Whether a task so suspended has a live timer entry, counted in its slot's `timers`.
    pub(crate) fn holds_timer(&self) -> bool {
        matches!(
            self,
            Suspension::Wait { timed: true, .. } | Suspension::Sliced { .. }
        )
    }
}

/// The Rust half of a task. Its counters are changed only by the core, which keeps the
/// scheduler-wide counts equal to their sums.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot<T> {
    generation: u32,
    /// The last token handed out for a suspension of this slot.
    token: u32,
    pub(super) suspension: Suspension,
    /// Live timer entries that name this slot and generation.
    pub(super) timers: u32,
    /// Live deferred entries that name this slot and generation.
    pub(super) queued: u32,
    /// The scheduler is resuming this task right now.
    pub(super) running: bool,
    /// How many host `Task` handles claim this task's outcome; kept when it ends if any do.
    pub(super) claims: u32,
    /// The thread is in the engine's set of threads that blocked in an mlua future.
    pub(super) in_blocked_set: bool,
    /// The task that started this one, as the number of its id ([`TaskId::as_u64`]); this
    /// task's own number when the host started it. Numbers rather than ids: 16 bytes a task
    /// less than two `TaskId`s, and the scheduler is known.
    creator: u64,
    /// The script the task belongs to: the number of the task at the root of its chain of
    /// creators (its own number for a root).
    script: u64,
    /// The thread, while the slot is occupied.
    thread: Option<T>,
    /// The thread the slot is reserved for, while it is ([`TaskTable::reserve`]).
    reserved: Option<T>,
}

impl<T: Copy> Slot<T> {
    /// The task's thread; the engine's thread store keeps it alive while the slot is occupied.
    pub(crate) fn thread(&self) -> Option<T> {
        self.thread
    }

    pub(crate) fn suspension(&self) -> Suspension {
        self.suspension
    }

    pub(crate) fn claims(&self) -> u32 {
        self.claims
    }

    pub(crate) fn is_running(&self) -> bool {
        self.running
    }

    /// The number of the task's script ([`TaskId::as_u64`]).
    pub(crate) fn script_number(&self) -> u64 {
        self.script
    }

    pub(super) fn next_token(&mut self) -> u32 {
        self.token = self.token.wrapping_add(1);
        self.token
    }

    /// Whether anything queued will still resume this task.
    pub(crate) fn has_pending(&self) -> bool {
        self.timers > 0 || self.queued > 0 || self.suspension != Suspension::None
    }
}

pub(crate) struct TaskTable<T> {
    /// The scheduler whose ids this table hands out and accepts.
    scheduler: SchedulerId,
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    occupied: usize,
    /// The generation new slots start at; raised by `reset`, so that ids handed out before it
    /// never match a task made after it.
    first_generation: u32,
}

impl<T: Copy + PartialEq> TaskTable<T> {
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
        debug_assert!(self.is_idle());
        let highest = self.slots.iter().map(|s| s.generation).max().unwrap_or(0);
        self.first_generation = self.first_generation.max(highest.wrapping_add(1));
        self.slots = Vec::new();
        self.free = Vec::new();
    }

    /// Whether every slot ever made is free again (none occupied, none waiting to be recycled).
    pub(crate) fn is_idle(&self) -> bool {
        self.occupied == 0 && self.free.len() == self.slots.len()
    }

    /// The task in `slot`, if that slot holds `thread`: the engine read the slot from a mark
    /// the thread carries, which another embedder's use of the thread must not alias.
    pub(crate) fn find(&self, slot: u32, thread: T) -> Option<TaskId> {
        let entry = self.slots.get(slot as usize)?;
        (entry.thread == Some(thread)).then(|| self.id(slot, entry.generation))
    }

    /// A new task for `thread`, started as `lineage` says (a root where it names nobody), in a
    /// free slot or a new one; `None` past 2^32 tasks.
    #[inline]
    pub(crate) fn insert(&mut self, thread: T, lineage: Lineage) -> Option<TaskId> {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(self.slots.len()).ok()?;
                self.slots.push(Slot {
                    generation: self.first_generation,
                    token: 0,
                    suspension: Suspension::None,
                    timers: 0,
                    queued: 0,
                    running: false,
                    claims: 0,
                    in_blocked_set: false,
                    creator: 0,
                    script: 0,
                    thread: None,
                    reserved: None,
                });
                slot
            }
        };
        self.occupied += 1;
        let entry = &mut self.slots[slot as usize];
        entry.thread = Some(thread);
        let id = TaskId::new(self.scheduler, slot, entry.generation);
        // A root is its own creator and script: a task never starts itself.
        entry.creator = lineage.creator.unwrap_or(id).local;
        entry.script = lineage.script.unwrap_or(id).local;
        Some(id)
    }

    /// Who started the live task `id`, and its script.
    pub(crate) fn lineage(&self, id: TaskId) -> Option<Lineage> {
        Some(self.lineage_in(id, self.get(id)?))
    }

    /// The lineage `slot` records for the task `id` (occupied or reserved).
    fn lineage_in(&self, id: TaskId, slot: &Slot<T>) -> Lineage {
        let named = |local: u64| (local != id.local).then(|| TaskId::of(self.scheduler, local));
        Lineage {
            creator: named(slot.creator),
            script: Some(TaskId::of(self.scheduler, slot.script)),
        }
    }

    /// The id of this scheduler's task in `slot` at `generation`.
    pub(crate) fn id(&self, slot: u32, generation: u32) -> TaskId {
        TaskId::new(self.scheduler, slot, generation)
    }

    /// The id of this scheduler's task whose number ([`TaskId::as_u64`]) is `number`.
    pub(crate) fn id_of_number(&self, number: u64) -> TaskId {
        TaskId::of(self.scheduler, number)
    }

    /// Whether `id` was made by this table's scheduler.
    pub(crate) fn owns(&self, id: TaskId) -> bool {
        id.scheduler() == self.scheduler
    }

    /// The slot of a live task; `None` for an id of another scheduler too.
    pub(crate) fn get(&self, id: TaskId) -> Option<&Slot<T>> {
        if !self.owns(id) {
            return None;
        }
        self.slots
            .get(id.slot() as usize)
            .filter(|s| s.thread.is_some() && s.generation == id.generation())
    }

    pub(crate) fn get_mut(&mut self, id: TaskId) -> Option<&mut Slot<T>> {
        if !self.owns(id) {
            return None;
        }
        self.slots
            .get_mut(id.slot() as usize)
            .filter(|s| s.thread.is_some() && s.generation == id.generation())
    }

    /// Frees the slot: every entry naming this generation turns stale. The slot is not reused
    /// until [`recycle`](Self::recycle). Returns the freed record, with its counts and thread,
    /// for the caller to settle.
    pub(crate) fn free(&mut self, id: TaskId) -> Option<Slot<T>> {
        let slot = self.get_mut(id)?;
        let freed = *slot;
        *slot = Slot {
            generation: slot.generation.wrapping_add(1),
            token: slot.token,
            suspension: Suspension::None,
            timers: 0,
            queued: 0,
            running: false,
            claims: 0,
            in_blocked_set: false,
            creator: 0,
            script: 0,
            thread: None,
            reserved: None,
        };
        self.occupied -= 1;
        Some(freed)
    }

    /// Frees the slot of an idle task as [`free`](Self::free) does, but keeps it, under the
    /// same generation, for the task's thread: see [`reclaim`](Self::reclaim). The slot is
    /// neither reused nor recycled until [`unreserve`](Self::unreserve).
    pub(crate) fn reserve(&mut self, id: TaskId) -> Option<Slot<T>> {
        let generation = self.get(id)?.generation;
        let freed = self.free(id)?;
        let slot = &mut self.slots[id.slot() as usize];
        slot.generation = generation;
        slot.reserved = freed.thread;
        // The same task when its thread comes back: the same creator and script too.
        slot.creator = freed.creator;
        slot.script = freed.script;
        Some(freed)
    }

    /// The reserved task in `slot`, occupied again by `thread` under its old id, if the slot
    /// is reserved for that thread.
    pub(crate) fn reclaim(&mut self, slot: u32, thread: T) -> Option<TaskId> {
        let entry = self.slots.get_mut(slot as usize)?;
        if entry.reserved != Some(thread) {
            return None;
        }
        entry.reserved = None;
        entry.thread = Some(thread);
        let generation = entry.generation;
        self.occupied += 1;
        Some(self.id(slot, generation))
    }

    /// Ends the reservation of the task `id`'s slot, which is then freed for good (a new
    /// generation) and recycled. False when it is not reserved for that task.
    pub(crate) fn unreserve(&mut self, id: TaskId) -> bool {
        if !self.owns(id) {
            return false;
        }
        let Some(entry) = self.slots.get_mut(id.slot() as usize) else {
            return false;
        };
        if entry.reserved.is_none() || entry.generation != id.generation() {
            return false;
        }
        entry.reserved = None;
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(id.slot());
        true
    }

    /// Makes a freed slot available again.
    pub(crate) fn recycle(&mut self, slot: u32) {
        debug_assert!(self.slots[slot as usize].thread.is_none());
        self.free.push(slot);
    }

    /// Every occupied slot, with its record.
    pub(crate) fn occupied(&self) -> impl Iterator<Item = (TaskId, &Slot<T>)> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.thread.is_some())
            .map(|(i, s)| (self.id(i as u32, s.generation), s))
    }

    /// Every slot reserved for the thread of a task that left with a plain yield while a host
    /// handle claims it, with its id and lineage.
    pub(crate) fn reserved(&self) -> impl Iterator<Item = (TaskId, Lineage)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.reserved.is_some())
            .map(|(i, s)| {
                let id = self.id(i as u32, s.generation);
                (id, self.lineage_in(id, s))
            })
    }

    pub(crate) fn len(&self) -> usize {
        self.occupied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserted_threads_are_found_and_forgotten_when_freed() {
        let mut table = TaskTable::new(SchedulerId::fresh());
        let id_a = table.insert('a', Lineage::default()).unwrap();
        let id_b = table.insert('b', Lineage::default()).unwrap();
        assert_ne!(id_a, id_b);
        assert_eq!(table.find(id_b.slot(), 'b'), Some(id_b));
        assert_eq!(table.find(id_b.slot(), 'a'), None, "another thread's mark");
        assert_eq!(table.free(id_a).and_then(|slot| slot.thread()), Some('a'));
        assert_eq!(table.find(id_a.slot(), 'a'), None);
        assert!(table.get(id_a).is_none(), "the old id is stale");
        assert!(table.free(id_a).is_none(), "freed once");
        let id_c = table.insert('c', Lineage::default()).unwrap();
        assert_ne!(id_c.slot(), id_a.slot(), "a freed slot waits for recycle");
        table.recycle(id_a.slot());
        let id_d = table.insert('d', Lineage::default()).unwrap();
        assert_eq!(id_d.slot(), id_a.slot(), "then it is reused");
        assert_ne!(id_d, id_a, "under a new generation");
        assert_eq!(table.len(), 3);
        assert_eq!(table.occupied().count(), 3);
    }

    #[test]
    fn reset_never_gives_an_old_id_to_a_new_task() {
        let mut table = TaskTable::new(SchedulerId::fresh());
        let old = table.insert(1, Lineage::default()).unwrap();
        table.free(old).unwrap();
        table.recycle(old.slot());
        assert!(table.is_idle());
        table.reset();
        assert_eq!(table.capacity(), 0);
        let new = table.insert(2, Lineage::default()).unwrap();
        assert_eq!(new.slot(), old.slot());
        assert_ne!(new, old);
        assert!(table.get(old).is_none());
    }

    #[test]
    fn a_freed_slot_forgets_its_counts_and_keeps_its_token_sequence() {
        let mut table = TaskTable::new(SchedulerId::fresh());
        let id = table.insert(1, Lineage::default()).unwrap();
        let slot = table.get_mut(id).unwrap();
        let first = slot.next_token();
        slot.timers = 2;
        slot.claims = 1;
        slot.suspension = Suspension::LuaFuture { token: first };
        assert!(slot.has_pending());
        let freed = table.free(id).unwrap();
        assert_eq!((freed.timers, freed.claims), (2, 1));
        table.recycle(id.slot());
        let again = table.insert(2, Lineage::default()).unwrap();
        let slot = table.get_mut(again).unwrap();
        assert!(!slot.has_pending());
        assert_eq!(slot.claims(), 0);
        assert_ne!(
            slot.next_token(),
            first,
            "a stale wake-up's token never matches"
        );
    }

    #[test]
    fn a_reserved_slot_gives_its_id_back_to_its_thread_alone_until_unreserved() {
        let mut table = TaskTable::new(SchedulerId::fresh());
        let id = table.insert('a', Lineage::default()).unwrap();
        table.get_mut(id).unwrap().next_token();
        assert!(table.reserve(id).is_some());
        assert!(table.get(id).is_none(), "reserved is not occupied");
        assert_eq!(table.find(id.slot(), 'a'), None);
        assert_eq!(table.len(), 0);
        assert!(!table.is_idle(), "a reserved slot is not free");
        let other = table.insert('b', Lineage::default()).unwrap();
        assert_ne!(other.slot(), id.slot(), "a reserved slot is not reused");
        assert_eq!(
            table.reclaim(id.slot(), 'b'),
            None,
            "reserved for its own thread only"
        );
        assert_eq!(table.reclaim(id.slot(), 'a'), Some(id));
        assert!(table.get(id).is_some());
        assert!(
            table.get_mut(id).unwrap().next_token() > 1,
            "tokens go on counting"
        );
        assert!(!table.unreserve(id), "reclaimed: nothing to unreserve");
        assert!(table.reserve(id).is_some());
        assert!(table.unreserve(id));
        assert_eq!(table.reclaim(id.slot(), 'a'), None);
        let next = table.insert('c', Lineage::default()).unwrap();
        assert_eq!(next.slot(), id.slot(), "unreserved, the slot is recycled");
        assert_ne!(next, id, "under a new generation");
    }
}
