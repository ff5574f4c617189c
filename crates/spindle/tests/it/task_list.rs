//! Seeing the scheduler: the host's live task list (each task's state, creator, script and
//! creation site), a task's traceback on demand, and the timeline of resumptions.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use spindle::mlua::{self, Thread};
use spindle::{Cause, Resumed, Span, TaskId, TaskInfo, TaskState};

use crate::support::{harness, harness_with, H};

/// The task list as a script saw it, with the ids of the threads it named.
#[derive(Default)]
struct Seen {
    list: Vec<TaskInfo>,
    ids: std::collections::HashMap<String, TaskId>,
}

/// A global `snapshot({name = thread, ...})` that keeps the task list at that moment, with the
/// task of each named thread.
fn snapshots(h: &H) -> Rc<RefCell<Seen>> {
    let kept: Rc<RefCell<Seen>> = Rc::default();
    let (sched, into) = (Rc::clone(&h.sched), Rc::clone(&kept));
    let snapshot = h
        .lua
        .create_function(move |_, named: mlua::Table| {
            let mut seen = into.borrow_mut();
            seen.list = sched.tasks();
            for pair in named.pairs::<String, Thread>() {
                let (name, thread) = pair?;
                seen.ids
                    .insert(name, sched.task_of(&thread).expect("a task"));
            }
            Ok(())
        })
        .unwrap();
    h.lua.globals().set("snapshot", snapshot).unwrap();
    kept
}

fn state_of(list: &[TaskInfo], id: TaskId) -> TaskState {
    list.iter()
        .find(|info| info.id == id)
        .unwrap_or_else(|| panic!("{id} is not listed in {list:?}"))
        .state
}

#[test]
fn the_task_list_shows_what_each_task_waits_for() {
    let h = harness();
    let kept = snapshots(&h);
    let never = h
        .sched
        .create_async_function(|_, ()| async { std::future::pending::<mlua::Result<()>>().await })
        .unwrap();
    h.lua.globals().set("never", never).unwrap();
    let main = h.spawn(
        r#"
        sleeper = task.spawn(task.wait, 5)
        forever = task.spawn(task.wait, math.huge)
        local signal = Signal.new()
        listener = task.spawn(function() signal:Wait() end)
        blocked = task.spawn(never)
        later = task.defer(print, "deferred")
        delayed = task.delay(2, print, "delayed")
        snapshot({ sleeper = sleeper, forever = forever, listener = listener,
            blocked = blocked, later = later, delayed = delayed })
        task.wait(1)
        "#,
    );
    let seen = kept.borrow();
    let (list, id_of) = (&seen.list, |name: &str| seen.ids[name]);
    assert_eq!(state_of(list, main.id()), TaskState::Running);
    let at = |seconds| Some(Duration::from_secs(seconds));
    assert_eq!(
        state_of(list, id_of("sleeper")),
        TaskState::Waiting { until: at(5) }
    );
    assert_eq!(
        state_of(list, id_of("forever")),
        TaskState::Waiting { until: None }
    );
    assert_eq!(
        state_of(list, id_of("listener")),
        TaskState::WaitingOnSignal
    );
    assert_eq!(state_of(list, id_of("blocked")), TaskState::BlockedOnFuture);
    assert_eq!(state_of(list, id_of("later")), TaskState::Deferred);
    assert_eq!(
        state_of(list, id_of("delayed")),
        TaskState::Delayed {
            until: Duration::from_secs(2)
        }
    );
    assert_eq!(list.len(), 7, "{list:?}");
    for info in list.iter().filter(|info| info.id != main.id()) {
        assert_eq!(info.creator, Some(main.id()), "{info:?}");
        assert_eq!(info.script, Some(main.id()), "{info:?}");
    }

    // Between cycles: the main task waits, the deferred one ran and ended.
    let after = h.sched.tasks();
    assert_eq!(
        state_of(&after, main.id()),
        TaskState::Waiting { until: at(1) }
    );
    assert_eq!(id_of_gone(list, &after), id_of("later"));
    let stuck: Vec<TaskState> = after
        .iter()
        .map(|info| info.state)
        .filter(TaskState::waits_for_ever)
        .collect();
    assert_eq!(
        stuck,
        [
            TaskState::Waiting { until: None },
            TaskState::WaitingOnSignal
        ]
    );
}

/// The one task of `before` that `after` lacks.
fn id_of_gone(before: &[TaskInfo], after: &[TaskInfo]) -> TaskId {
    let gone: Vec<TaskId> = before
        .iter()
        .map(|info| info.id)
        .filter(|id| after.iter().all(|info| info.id != *id))
        .collect();
    assert_eq!(gone.len(), 1, "{before:?} then {after:?}");
    gone[0]
}

#[test]
fn a_running_task_may_read_its_own_traceback_from_rust() {
    let h = harness();
    let sched = Rc::clone(&h.sched);
    let whereami = h
        .lua
        .create_function(move |_, ()| {
            let me = sched.current_task().expect("called from a task");
            Ok(sched.traceback(me))
        })
        .unwrap();
    h.lua.globals().set("whereami", whereami).unwrap();
    let task = h.spawn("local function deep()\n  return whereami()\nend\nreturn deep()\n");
    let traceback: Option<String> = h.result(&task);
    let traceback = traceback.expect("a traceback");
    assert!(traceback.contains("test:2"), "{traceback}");
    assert!(traceback.contains("test:4"), "{traceback}");
}

#[test]
fn a_task_let_go_by_a_plain_yield_is_listed_while_a_handle_claims_it() {
    let h = harness();
    let task = h.spawn("coroutine.yield()");
    let list = h.sched.tasks();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, task.id());
    assert_eq!(list[0].state, TaskState::Yielded);
    assert!(h.sched.traceback(&task).is_some());
    drop(task);
    assert!(h.sched.tasks().is_empty(), "unclaimed, it is no task");
}

#[test]
fn creation_sites_name_the_line_that_made_each_task_when_recorded() {
    let source = "local function child() task.wait(1) end\n\
                  first = task.spawn(child)\n\
                  second = task.delay(1, child)\n\
                  task.wait(1)\n";
    let h = harness_with(|builder| builder.record_creation_sites(true));
    let main = h.spawn(source);
    let site = |id| h.sched.creation_site(id).map(|site| site.to_string());
    let id_of = |name: &str| h.sched.task_of(&h.global::<Thread>(name)).unwrap();
    assert_eq!(site(id_of("first")).as_deref(), Some("test:2"));
    assert_eq!(site(id_of("second")).as_deref(), Some("test:3"));
    assert_eq!(
        site(main.id()).as_deref(),
        Some("test:1"),
        "the host's task: where its function begins"
    );
    let listed = h.sched.tasks();
    assert_eq!(listed[1].site.as_ref().map(|s| s.line), Some(2));

    let off = harness();
    off.spawn(source);
    assert!(off.sched.tasks().iter().all(|info| info.site.is_none()));
}

#[test]
fn a_suspended_tasks_traceback_names_the_line_where_it_waits() {
    let h = harness();
    let task = h.spawn("local function nap()\n  task.wait(5)\nend\nnap()\n");
    let traceback = h.sched.traceback(&task).expect("a traceback");
    assert!(traceback.starts_with("stack traceback:"), "{traceback}");
    assert!(traceback.contains("test:2"), "{traceback}");
    assert!(traceback.contains("test:4"), "{traceback}");
    h.step(5.0);
    assert_eq!(h.sched.traceback(&task), None, "it ended");
}

fn causes(spans: &[Span]) -> Vec<(u64, Cause)> {
    spans.iter().map(|s| (s.task.as_u64(), s.cause)).collect()
}

#[test]
fn the_timeline_gives_each_resumption_its_cause_in_the_order_they_started() {
    let h = harness();
    h.sched.start_timeline();
    let ready = h
        .sched
        .create_async_function(|_, ()| async {
            futures_lite::future::yield_now().await;
            Ok(())
        })
        .unwrap();
    h.lua.globals().set("ready", ready).unwrap();
    let main = h.spawn(
        r#"
        local signal = Signal.new("Immediate")
        signal:Connect(function() end)
        task.spawn(function() signal:Wait() end)
        task.defer(function() end)
        task.delay(1, function() end)
        signal:Fire()
        ready()
        task.wait(2)
        "#,
    );
    futures_lite::future::block_on(h.sched.run(async_io::Timer::at)).unwrap();
    let spans = h.sched.take_timeline();
    let kinds: Vec<Cause> = spans.iter().map(|s| s.cause).collect();
    assert_eq!(
        kinds,
        [
            Cause::Spawn,  // the main task
            Cause::Spawn,  // the signal waiter, until it waits
            Cause::Signal, // the handler, called at once
            Cause::Signal, // the waiter, woken
            Cause::Defer,
            Cause::Future,
            Cause::Delay,
            Cause::Timer,
        ],
        "{spans:#?}"
    );
    assert_eq!(spans[0].task, main.id());
    // The handler and the woken waiter ran inside the main task's resumption.
    for nested in &spans[1..4] {
        assert!(nested.start >= spans[0].start);
        assert!(nested.start + nested.duration <= spans[0].start + spans[0].duration);
    }
    assert!(spans.windows(2).all(|w| w[0].start <= w[1].start));
    assert_eq!(spans.last().unwrap().clock, Duration::from_secs(2));
    assert!(h.sched.take_timeline().is_empty(), "taken");
}

#[test]
fn the_timeline_records_nothing_until_started_and_a_hand_resume_as_resume() {
    let h = harness();
    h.run("task.spawn(task.wait, 1)");
    assert!(h.sched.take_timeline().is_empty());
    h.sched.start_timeline();
    let thread = h.lua.create_thread(h.func("task.wait(1)")).unwrap();
    let Resumed::Pending(id) = h.sched.resume::<()>(&thread, ()).unwrap() else {
        panic!("it waits");
    };
    h.step(1.0);
    let spans = h.sched.take_timeline();
    assert_eq!(
        causes(&spans),
        [(id.as_u64(), Cause::Resume), (id.as_u64(), Cause::Timer)]
    );
    assert_eq!(spans[1].cycle, h.sched.cycle_count());
}
