//! Gates: futures a test completes by hand. A gate's future stays pending until the test opens
//! its gate from Rust (or Lua), keeping only the latest waker it was polled with, as ordinary
//! futures do (channels, timers). A drop guard counts futures dropped before they completed.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use spindle::mlua::{self, Value};

use super::H;

#[derive(Default)]
pub struct GateState {
    open: bool,
    wakers: BTreeMap<u64, Waker>,
}

#[derive(Clone, Default)]
pub struct Gates {
    gates: Rc<RefCell<HashMap<String, Rc<RefCell<GateState>>>>>,
    next: Rc<Cell<u64>>,
    polls: Rc<Cell<u32>>,
    /// Futures dropped before they completed.
    dropped_pending: Rc<Cell<u32>>,
}

impl Gates {
    pub fn gate(&self, name: &str) -> Rc<RefCell<GateState>> {
        Rc::clone(self.gates.borrow_mut().entry(name.to_owned()).or_default())
    }

    pub fn open(&self, name: &str) {
        let gate = self.gate(name);
        let wakers: Vec<Waker> = {
            let mut g = gate.borrow_mut();
            g.open = true;
            std::mem::take(&mut g.wakers).into_values().collect()
        };
        for w in wakers {
            w.wake();
        }
    }

    pub fn wait(&self, name: &str) -> GateWait {
        let id = self.next.get();
        self.next.set(id + 1);
        GateWait {
            gate: self.gate(name),
            id,
            done: false,
            polls: Rc::clone(&self.polls),
            dropped_pending: Rc::clone(&self.dropped_pending),
        }
    }

    pub fn dropped(&self) -> u32 {
        self.dropped_pending.get()
    }
}

pub struct GateWait {
    gate: Rc<RefCell<GateState>>,
    id: u64,
    done: bool,
    polls: Rc<Cell<u32>>,
    dropped_pending: Rc<Cell<u32>>,
}

impl Future for GateWait {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.polls.set(self.polls.get() + 1);
        let mut g = self.gate.borrow_mut();
        if g.open {
            g.wakers.remove(&self.id);
            drop(g);
            self.done = true;
            Poll::Ready(())
        } else {
            // Like any ordinary future: keep only the waker of the latest poll.
            g.wakers.insert(self.id, cx.waker().clone());
            Poll::Pending
        }
    }
}

impl Drop for GateWait {
    fn drop(&mut self) {
        if !self.done {
            self.dropped_pending.set(self.dropped_pending.get() + 1);
        }
        self.gate.borrow_mut().wakers.remove(&self.id);
    }
}

/// Installs, as globals:
/// - `owned_wait(name)` / `mlua_wait(name)`: block until gate `name` opens, return `name`
///   (Spindle's async API / mlua's `create_async_function`);
/// - `owned_fail_now(msg)`, `owned_fail_later(name, msg)`, `mlua_fail_later(name, msg)`;
/// - `owned_values_now()`, `owned_values_later(name)`: return `1, nil, 3`;
/// - `open_gate(name)`, `dropped()`.
pub fn install_gates(h: &H) -> Gates {
    let gates = Gates::default();
    let g = h.lua.globals();

    let gs = gates.clone();
    let f = h
        .sched
        .create_async_function(move |_, name: String| {
            let w = gs.wait(&name);
            async move {
                w.await;
                Ok(name)
            }
        })
        .unwrap();
    g.set("owned_wait", f).unwrap();

    let gs = gates.clone();
    let f = h
        .lua
        .create_async_function(move |_, name: String| {
            let w = gs.wait(&name);
            async move {
                w.await;
                Ok(name)
            }
        })
        .unwrap();
    g.set("mlua_wait", f).unwrap();

    let f = h
        .sched
        .create_async_function(
            |_, msg: String| async move { Err::<(), _>(mlua::Error::runtime(msg)) },
        )
        .unwrap();
    g.set("owned_fail_now", f).unwrap();

    let gs = gates.clone();
    let f = h
        .sched
        .create_async_function(move |_, (name, msg): (String, String)| {
            let w = gs.wait(&name);
            async move {
                w.await;
                Err::<(), _>(mlua::Error::runtime(msg))
            }
        })
        .unwrap();
    g.set("owned_fail_later", f).unwrap();

    let gs = gates.clone();
    let f = h
        .lua
        .create_async_function(move |_, (name, msg): (String, String)| {
            let w = gs.wait(&name);
            async move {
                w.await;
                Err::<(), _>(mlua::Error::runtime(msg))
            }
        })
        .unwrap();
    g.set("mlua_fail_later", f).unwrap();

    let f = h
        .sched
        .create_async_function(|_, ()| async move { Ok((1, Value::Nil, 3)) })
        .unwrap();
    g.set("owned_values_now", f).unwrap();

    let gs = gates.clone();
    let f = h
        .sched
        .create_async_function(move |_, name: String| {
            let w = gs.wait(&name);
            async move {
                w.await;
                Ok((1, Value::Nil, 3))
            }
        })
        .unwrap();
    g.set("owned_values_later", f).unwrap();

    let gs = gates.clone();
    let f = h
        .lua
        .create_function(move |_, name: String| {
            gs.open(&name);
            Ok(())
        })
        .unwrap();
    g.set("open_gate", f).unwrap();

    let gs = gates.clone();
    let f = h
        .lua
        .create_function(move |_, ()| Ok(gs.dropped()))
        .unwrap();
    g.set("dropped", f).unwrap();

    gates
}
