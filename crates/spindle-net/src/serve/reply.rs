//! Reply slots: where a request's task leaves the handler's answer for the exchange that waits
//! for it.
//!
//! Each exchange opens a slot and passes its key to its task; `respond`, called in the task
//! with what the handler returned, checks the answer and puts it in the slot. The exchange
//! reads the slot once the task is over: at once when the handler returned without yielding,
//! otherwise when the scheduler says the task ended. So the task returns nothing, its results
//! are never kept or converted, and a handler that does not yield needs no join and no timer.
//! A task that ended with nothing in its slot failed or was cancelled.
//!
//! Invariant: a key names one exchange's slot only. A slot is freed when its exchange lets go
//! of it, and reused under a new generation, so a late answer under the old key (from a task
//! whose cancel was refused) is dropped, never read as another request's.

use std::cell::RefCell;
use std::rc::Rc;

use super::exchange::Answer;

/// Generations wrap at this many bits, so that a key (index in the low 32 bits) stays an
/// integer that a Luau number (a double) holds exactly.
const GENERATION_BITS: u32 = 20;

/// The slots of one server.
#[derive(Default)]
pub(super) struct Replies(RefCell<Slab>);

#[derive(Default)]
struct Slab {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    open: bool,
    answer: Option<Answer>,
}

impl Replies {
    /// Opens a slot for one exchange; it is freed when the returned guard is dropped.
    pub(super) fn open(self: &Rc<Self>) -> ReplySlot {
        let mut slab = self.0.borrow_mut();
        let index = match slab.free.pop() {
            Some(index) => index,
            None => {
                slab.slots.push(Slot::default());
                (slab.slots.len() - 1) as u32
            }
        };
        let slot = &mut slab.slots[index as usize];
        slot.open = true;
        let key = (u64::from(slot.generation) << 32 | u64::from(index)) as i64;
        ReplySlot {
            replies: Rc::clone(self),
            key,
        }
    }

    /// Leaves `answer` in the slot `key` names, if its exchange still waits there.
    pub(super) fn put(&self, key: i64, answer: Answer) {
        let (index, generation) = split(key);
        let mut slab = self.0.borrow_mut();
        if let Some(slot) = slab.slots.get_mut(index) {
            if slot.open && slot.generation == generation && slot.answer.is_none() {
                slot.answer = Some(answer);
            }
        }
    }
}

fn split(key: i64) -> (usize, u32) {
    let key = key as u64;
    ((key & u64::from(u32::MAX)) as usize, (key >> 32) as u32)
}

/// One exchange's slot.
pub(super) struct ReplySlot {
    replies: Rc<Replies>,
    key: i64,
}

impl ReplySlot {
    /// The key the task passes to `respond`.
    pub(super) fn key(&self) -> i64 {
        self.key
    }

    /// The answer, once `respond` left one.
    pub(super) fn take(&self) -> Option<Answer> {
        let (index, _) = split(self.key);
        self.replies.0.borrow_mut().slots[index].answer.take()
    }
}

impl Drop for ReplySlot {
    fn drop(&mut self) {
        let (index, _) = split(self.key);
        let mut slab = self.replies.0.borrow_mut();
        let slot = &mut slab.slots[index];
        slot.open = false;
        let answer = slot.answer.take();
        slot.generation = (slot.generation + 1) & ((1 << GENERATION_BITS) - 1);
        slab.free.push(index as u32);
        drop(slab);
        // An answer nobody read is dropped outside the borrow.
        drop(answer);
    }
}
