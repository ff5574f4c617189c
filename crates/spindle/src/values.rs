//! What the engine keeps Lua-side, so that mlua's reference stack holds none of it: the
//! threads of tasks ([`ThreadStore`]), and lists of Lua values kept for later
//! ([`ValueStore`]): the arguments of deferred and delayed resumptions, and the results of host
//! tasks until the host reads them.
//!
//! Each kept list owns one key; keys are small integers that are reused, so the table stays in
//! Lua's array part and its size follows the peak of kept lists. A list is freed the moment its
//! key is taken or discarded (unlike a registry value, which mlua frees lazily). Lua never
//! shrinks a table, so once every key is back the table is replaced if it grew large.
//! Invariant: a key is either free or holds exactly one list: a packed table, or, for a list of
//! one value (a handler's answer, a deferred call's argument), the value itself, which saves
//! the table and its writes through mlua: keeping a `net.serve` handler's answer went from
//! 6,000 instructions to 1,100 and reading it from 2,600 to 950 (callgrind, `net-bench
//! --callgrind`). [`SINGLE`] in the key says which.

use std::cell::RefCell;
use std::rc::Rc;

use mlua::{Lua, MultiValue, Table, Thread, Value};

use crate::core::ValuesKey;

pub(crate) struct ValueStore {
    table: RefCell<Table>,
    keys: RefCell<Keys>,
}

#[derive(Default)]
struct Keys {
    free: Vec<u32>,
    /// Keys ever made since the table was last replaced; key `n` is array index `n + 1`.
    made: u32,
}

/// How many keys a table may have made and still be kept when it empties.
const KEEP: u32 = 1024;

/// The bit of a [`ValuesKey`] that marks a list of one value kept as it is.
const SINGLE: u32 = 1 << 31;

impl ValueStore {
    pub(crate) fn new(lua: &Lua) -> mlua::Result<Self> {
        Ok(ValueStore {
            table: RefCell::new(lua.create_table()?),
            keys: RefCell::default(),
        })
    }

    /// Keeps `values`; `None` when there are none, which costs nothing.
    pub(crate) fn store(&self, lua: &Lua, values: MultiValue) -> mlua::Result<Option<ValuesKey>> {
        let (kept, single) = match values.len() {
            0 => return Ok(None),
            1 => (values.into_iter().next().unwrap_or(Value::Nil), SINGLE),
            _ => (Value::Table(pack(lua, values)?), 0),
        };
        let key = {
            let mut keys = self.keys.borrow_mut();
            match keys.free.pop() {
                Some(key) => key,
                None => {
                    keys.made += 1;
                    keys.made - 1
                }
            }
        };
        let table = self.table.borrow().clone();
        if let Err(error) = table.raw_set(key as i64 + 1, kept) {
            self.keys.borrow_mut().free.push(key);
            return Err(error);
        }
        Ok(Some(ValuesKey(key | single)))
    }

    /// The values, left in place.
    pub(crate) fn get(&self, key: Option<ValuesKey>) -> mlua::Result<MultiValue> {
        let Some(ValuesKey(key)) = key else {
            return Ok(MultiValue::new());
        };
        let kept: Value = self.table.borrow().clone().raw_get(index(key))?;
        unpack(key, kept)
    }

    /// Takes the values out, freeing the key.
    pub(crate) fn take(&self, key: Option<ValuesKey>) -> mlua::Result<MultiValue> {
        let Some(ValuesKey(key)) = key else {
            return Ok(MultiValue::new());
        };
        let table = self.table.borrow().clone();
        let kept: Value = table.raw_get(index(key))?;
        self.release(key, &table);
        unpack(key, kept)
    }

    /// Drops values that will not be used.
    pub(crate) fn discard(&self, key: Option<ValuesKey>) {
        if let Some(ValuesKey(key)) = key {
            let table = self.table.borrow().clone();
            self.release(key, &table);
        }
    }

    fn release(&self, key: u32, table: &Table) {
        // Setting an existing array entry to nil neither allocates nor calls back into Rust.
        let _ = table.raw_set(index(key), mlua::Nil);
        self.keys.borrow_mut().free.push(key & !SINGLE);
    }

    /// Replaces a large table once every key is back, giving its memory to the collector.
    pub(crate) fn trim(&self, lua: &Lua) -> mlua::Result<()> {
        {
            let keys = self.keys.borrow();
            if keys.made <= KEEP || keys.free.len() != keys.made as usize {
                return Ok(());
            }
        }
        let fresh = lua.create_table()?;
        *self.table.borrow_mut() = fresh;
        *self.keys.borrow_mut() = Keys::default();
        Ok(())
    }
}

/// Packs values into a table with a count, as `table.pack` does.
fn pack(lua: &Lua, values: MultiValue) -> mlua::Result<Table> {
    let count = values.len();
    let table = lua.create_table_with_capacity(count, 1)?;
    for (i, value) in values.into_iter().enumerate() {
        table.raw_set(i + 1, value)?;
    }
    table.raw_set("n", count)?;
    Ok(table)
}

/// The array index of a key's list in the store's table.
fn index(key: u32) -> i64 {
    i64::from(key & !SINGLE) + 1
}

/// The values kept under `key`: the value itself for a [`SINGLE`] key, else those of a table
/// made by [`pack`]; none if the entry is gone.
fn unpack(key: u32, kept: Value) -> mlua::Result<MultiValue> {
    if key & SINGLE != 0 {
        return Ok(MultiValue::from_iter([kept]));
    }
    let Value::Table(table) = kept else {
        return Ok(MultiValue::new());
    };
    let count: usize = table.raw_get("n")?;
    (1..=count).map(|i| table.raw_get::<Value>(i)).collect()
}

/// The Lua half: `threads[slot + 1]` holds each task's thread, so that the thread lives as long
/// as its task without a Rust handle. Only used outside the scheduler's state borrow.
///
/// The table is shared through an `Rc`, which each access clones out first: the call may run
/// finalizers that come back here, and even replace the table, which then lives until the
/// call ends. Cloning the `Table` handle itself made and dropped an mlua reference each time:
/// about 300 instructions a task, at its start and its end (callgrind, spawn_wait).
pub(crate) struct ThreadStore {
    table: RefCell<Rc<Table>>,
}

impl ThreadStore {
    pub(crate) fn new(lua: &Lua) -> mlua::Result<Self> {
        Ok(ThreadStore {
            table: RefCell::new(Rc::new(lua.create_table()?)),
        })
    }

    fn table(&self) -> Rc<Table> {
        Rc::clone(&self.table.borrow())
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

    /// The Lua state the store lives in, while it does.
    pub(crate) fn lua(&self) -> Option<Lua> {
        self.table.borrow().weak_lua().try_upgrade()
    }

    /// Starts afresh with an empty table (Lua never shrinks the old one's array).
    pub(crate) fn replace(&self, table: Table) {
        *self.table.borrow_mut() = Rc::new(table);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_reused_and_values_round_trip() {
        let lua = Lua::new();
        let store = ValueStore::new(&lua).unwrap();
        let args = MultiValue::from_iter([Value::Integer(1), Value::Nil, Value::Boolean(true)]);
        let first = store.store(&lua, args).unwrap();
        let values = store.take(first).unwrap();
        assert_eq!(values.len(), 3);
        assert!(values[1].is_nil());
        let second = store
            .store(&lua, MultiValue::from_iter([Value::Integer(2)]))
            .unwrap();
        let index = |key: Option<ValuesKey>| key.map(|ValuesKey(key)| key & !SINGLE);
        assert_eq!(index(first), index(second), "a freed key is reused");
        assert!(store.store(&lua, MultiValue::new()).unwrap().is_none());
    }

    #[test]
    fn a_single_value_is_kept_as_it_is_and_comes_back_alone() {
        let lua = Lua::new();
        let store = ValueStore::new(&lua).unwrap();
        // A table that looks like a packed list, and a nil: each comes back as the one value.
        let packed_look = lua.create_table().unwrap();
        packed_look.raw_set("n", 3).unwrap();
        let cases = [
            Value::Table(packed_look.clone()),
            Value::Nil,
            Value::Integer(7),
        ];
        for value in cases {
            let key = store
                .store(&lua, MultiValue::from_iter([value.clone()]))
                .unwrap();
            let got = store.get(key).unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0], value);
            let taken = store.take(key).unwrap();
            assert_eq!(taken.len(), 1);
            assert_eq!(taken[0], value);
        }
        assert_eq!(store.keys.borrow().made, 1, "each single freed its key");
    }

    #[test]
    fn an_emptied_large_table_is_replaced() {
        let lua = Lua::new();
        let store = ValueStore::new(&lua).unwrap();
        let keys: Vec<_> = (0..2000)
            .map(|i| {
                store
                    .store(&lua, MultiValue::from_iter([Value::Integer(i)]))
                    .unwrap()
            })
            .collect();
        let old = store.table.borrow().clone();
        store.trim(&lua).unwrap();
        assert_eq!(*store.table.borrow(), old, "kept while keys are out");
        keys.into_iter().for_each(|key| store.discard(key));
        store.trim(&lua).unwrap();
        assert_ne!(*store.table.borrow(), old);
        assert_eq!(store.keys.borrow().made, 0);
    }
}
