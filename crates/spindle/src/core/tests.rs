//! The core without a VM: threads are plain numbers, outcomes strings.

use std::time::Duration;

use super::*;

type TestCore = Core<u32, &'static str>;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn resume_timer(task: TaskId) -> TimerEntry {
    TimerEntry {
        task,
        kind: TimerKind::Resume(Resumption {
            args: Some(ValuesKey(7)),
            fresh: false,
        }),
    }
}

fn deferred(task: TaskId, level: u32) -> Deferred {
    Deferred {
        task,
        level,
        resumption: Resumption {
            args: None,
            fresh: true,
        },
    }
}

/// Every timer due at `now`, with whether it is live.
fn due(core: &mut TestCore, now: Duration) -> Vec<(TaskId, bool)> {
    let mut out = Vec::new();
    core.take_due(now, |entry, live| out.push((entry.task, live)));
    out
}

#[test]
fn a_timed_wait_is_work_until_it_ends_and_an_untimed_one_never_is() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let id = core.insert(1).unwrap();
    assert!(!core.has_work());
    core.file_wait(id, secs(0), Some(secs(5))).unwrap();
    assert!(
        core.has_work(),
        "a wait with a deadline keeps the run going"
    );
    core.end_suspension_if(id, |s| matches!(s, Suspension::Wait { .. }));
    assert!(!core.has_work(), "its timer no longer counts");
    assert_eq!(due(&mut core, secs(5)), vec![(id, false)], "and is stale");
    core.file_wait(id, secs(0), None).unwrap();
    assert!(
        !core.has_work(),
        "math.huge: only something else can end it"
    );
    assert!(!core.has_timers());
    core.check_counts();
}

#[test]
fn a_second_wait_makes_the_first_ones_timer_stale() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let id = core.insert(1).unwrap();
    let first = core.file_wait(id, secs(0), Some(secs(1))).unwrap();
    let second = core.file_wait(id, secs(0), Some(secs(2))).unwrap();
    assert_ne!(first, second);
    assert_eq!(due(&mut core, secs(2)), vec![(id, false), (id, true)]);
    match core.start_timed_wake(id, first, |_| true) {
        TimedWake::Stale => {}
        _ => panic!("the first wait's token must be stale"),
    }
    match core.start_timed_wake(id, second, |_| true) {
        TimedWake::Raw { thread, since, .. } => assert_eq!((thread, since), (1, secs(0))),
        _ => panic!("the second wait's timer resumes it"),
    }
    assert!(core.is_resuming());
    assert!(core.end_resumption(id), "nothing else holds the task");
    assert!(!core.is_resuming());
    core.check_counts();
}

#[test]
fn a_timed_wake_takes_the_general_path_for_a_claimed_task_or_when_told() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let id = core.insert(1).unwrap();
    let token = core.file_wait(id, secs(3), Some(secs(4))).unwrap();
    let mut asked = None;
    match core.start_timed_wake(id, token, |thread| {
        asked = Some(thread);
        false
    }) {
        TimedWake::Full { since } => assert_eq!(since, secs(3)),
        _ => panic!("the lane was refused"),
    }
    assert_eq!(asked, Some(1), "the lane check sees the task's thread");
    assert!(
        !core.is_resuming(),
        "the general path starts the resumption itself"
    );
    core.claim(id);
    match core.start_timed_wake(id, token, |_| panic!("not asked for a claimed task")) {
        TimedWake::Full { .. } => {}
        _ => panic!("a claimed task's results must be converted"),
    }
}

#[test]
fn freeing_a_task_drops_its_timers_deferrals_and_future_from_the_counts() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let id = core.insert(9).unwrap();
    assert!(core.push_timer(secs(1), resume_timer(id)));
    assert!(core.push_deferred(deferred(id, 1)));
    assert!(core.block_on_future(id, 3, true));
    assert!(core.has_work() && core.has_deferred());
    let freed = core.free(id).unwrap();
    assert_eq!((freed.slot, freed.thread), (id.slot(), Some(9)));
    assert!(!core.has_work() && !core.has_deferred());
    core.check_counts();
    let (entry, live) = core.pop_deferred().unwrap();
    assert_eq!((entry.task, live), (id, false));
    let mut stale = Vec::new();
    assert_eq!(core.next_deadline(|args| stale.push(args)), None);
    assert_eq!(
        stale,
        vec![Some(ValuesKey(7))],
        "a stale timer's arguments are handed back"
    );
    assert!(
        !core.push_timer(secs(1), resume_timer(id)),
        "a freed task takes no timer"
    );
    assert!(!core.push_deferred(deferred(id, 1)), "nor a deferral");
    assert!(!core.block_on_future(id, 4, false));
    assert!(core.free(id).is_none());
}

#[test]
fn a_resume_timer_counts_until_it_fires() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let id = core.insert(1).unwrap();
    core.push_timer(secs(2), resume_timer(id));
    assert_eq!(core.next_deadline(|_| panic!("live")), Some(secs(2)));
    assert_eq!(due(&mut core, secs(1)), vec![], "not due yet");
    assert_eq!(due(&mut core, secs(2)), vec![(id, true)]);
    assert!(
        core.has_work(),
        "taken off the heap, it still counts until it runs"
    );
    assert!(core.fire_resume_timer(id));
    assert!(!core.has_work());
    core.check_counts();
}

#[test]
fn deferrals_made_while_draining_are_one_level_deeper() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let id = core.insert(1).unwrap();
    assert_eq!(core.next_defer_level(), 1, "outside the drain");
    core.push_deferred(deferred(id, 1));
    assert!(core.start_drain());
    assert!(!core.start_drain(), "a drain does not nest");
    let (entry, live) = core.pop_deferred().unwrap();
    assert!(live);
    assert_eq!(entry.level, 1);
    assert_eq!(core.next_defer_level(), 2);
    core.push_deferred(deferred(id, 2));
    core.pop_deferred().unwrap();
    assert_eq!(core.next_defer_level(), 3);
    core.end_drain();
    assert_eq!(core.next_defer_level(), 1);
    assert!(core.pop_deferred().is_none());
}

#[test]
fn a_cycle_or_drain_refuses_to_start_inside_a_resumption_or_another_cycle() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let id = core.insert(1).unwrap();
    assert!(core.enter_cycle());
    assert!(!core.enter_cycle());
    core.leave_cycle();
    core.start_resumption(id, true).unwrap();
    assert!(!core.enter_cycle(), "inside a resumption");
    assert!(!core.start_drain(), "the resumption's own drain runs it");
    core.end_resumption(id);
    assert!(core.enter_cycle() && core.in_cycle());
}

#[test]
fn a_resumption_ends_a_suspension_only_when_asked() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let id = core.insert(1).unwrap();
    let blocked = core.next_token(id).unwrap();
    core.block_on_future(id, blocked, true);
    let token = core.start_resumption(id, false).unwrap();
    assert!(!core.end_resumption(id), "still blocked on its future");
    assert!(core.wake_is_live(id, blocked));
    assert!(
        !core.wake_is_live(id, token),
        "a resumption's token is its own"
    );
    core.start_resumption(id, true).unwrap();
    assert!(
        !core.wake_is_live(id, blocked),
        "the future's wake-up went stale"
    );
    assert!(core.task(id).unwrap().is_running());
    assert!(!core.is_idle(id), "a running task is not idle");
    assert!(core.end_resumption(id));
    assert!(core.is_idle(id));
    core.check_counts();
}

#[test]
fn a_sliced_task_goes_on_through_its_continue_timer() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let id = core.insert(1).unwrap();
    assert!(core.file_sliced(id, secs(3), secs(10)));
    assert!(core.has_work());
    assert_eq!(
        core.task(id).unwrap().suspension(),
        Suspension::Sliced {
            token: 1,
            ran: secs(3)
        }
    );
    core.start_resumption(id, true);
    assert!(
        !core.has_work(),
        "resumed by other means: the timer is stale"
    );
    assert_eq!(due(&mut core, secs(10)), vec![(id, false)]);
    core.end_resumption(id);
    core.free(id);
    assert!(!core.file_sliced(id, secs(0), secs(0)));
}

#[test]
fn outcomes_are_freed_when_the_last_claim_goes() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let id = core.insert(1).unwrap();
    core.claim(id);
    core.claim(id);
    assert_eq!(core.unclaim(id), None, "a live task only loses a claim");
    let freed = core.free(id).unwrap();
    assert_eq!(freed.claims, 1);
    core.keep_outcome(id, "done", 2);
    assert!(core.has_outcome(id));
    assert_eq!(core.unclaim(id), None, "one claim left");
    assert_eq!(core.unclaim(id), Some("done"), "the last one frees it");
    assert!(!core.has_outcome(id));
    core.keep_outcome(id, "failed", 1);
    *core.outcome_mut(id).unwrap() = "cancelled";
    assert_eq!(core.take_outcome(id), Some(("cancelled", 1)));
    assert_eq!(core.take_outcome(id), None);
}

#[test]
fn compaction_keeps_the_heap_proportional_to_live_timers() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let live = core.insert(1).unwrap();
    core.file_wait(live, secs(0), Some(secs(1000)));
    let gone = core.insert(2).unwrap();
    for n in 0..200 {
        core.push_timer(secs(n), resume_timer(gone));
    }
    core.free(gone);
    let mut stale = 0;
    core.compact_timers(|_| stale += 1);
    assert_eq!(stale, 200);
    assert_eq!(
        core.next_deadline(|_| panic!("compacted")),
        Some(secs(1000))
    );
    core.end_suspension_if(live, |_| true);
    let mut stale = 0;
    core.compact_timers(|_| stale += 1);
    assert_eq!(stale, 1, "with no live timer, the heap empties");
    assert!(!core.has_timers());
}

#[test]
fn shutdown_hands_back_every_queued_argument() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let id = core.insert(1).unwrap();
    core.push_timer(secs(1), resume_timer(id));
    core.push_deferred(deferred(id, 1));
    core.free(id);
    let mut args = Vec::new();
    core.clear_queues(|key| args.push(key));
    assert_eq!(args, vec![Some(ValuesKey(7)), None]);
    assert!(!core.has_timers() && core.pop_deferred().is_none());
    core.recycle(id.slot());
    assert!(core.is_idle_and_larger_than(0));
    core.trim();
    assert!(!core.is_idle_and_larger_than(0));
    let again = core.insert(3).unwrap();
    assert_ne!(again, id, "an id from before the trim never comes back");
}

#[test]
fn a_task_id_shows_its_slot_and_generation_and_debug_names_its_scheduler() {
    let scheduler = SchedulerId::fresh();
    let mut core = TestCore::new(scheduler);
    let first = core.insert(1).unwrap();
    let second = core.insert(2).unwrap();
    assert_eq!(first.to_string(), "#0.0");
    assert_eq!(second.to_string(), "#1.0");
    core.free(first).unwrap();
    core.recycle(first.slot());
    let reused = core.insert(3).unwrap();
    assert_eq!(reused.to_string(), "#0.1");
    assert_eq!(
        format!("{reused:?}"),
        format!("TaskId(#0.1 of scheduler {})", scheduler.0)
    );
}

#[test]
fn only_a_task_blocked_in_a_future_is_awaiting() {
    let awaiting = [
        Suspension::LuaFuture { token: 1 },
        Suspension::OwnedFuture { token: 1 },
    ];
    let not_awaiting = [
        Suspension::None,
        Suspension::Wait {
            token: 1,
            since: secs(0),
            timed: true,
        },
        Suspension::Sliced {
            token: 1,
            ran: secs(0),
        },
    ];
    assert!(awaiting.iter().all(Suspension::is_awaiting));
    assert!(!not_awaiting.iter().any(Suspension::is_awaiting));
    // And a task so blocked is work (the driver waits for its waker), until it is resumed.
    let mut core = TestCore::new(SchedulerId::fresh());
    let id = core.insert(1).unwrap();
    assert!(core.block_on_future(id, 1, false));
    assert!(core.has_work());
    core.start_resumption(id, true).unwrap();
    assert!(!core.has_work());
    core.check_counts();
}

#[test]
fn a_slot_reports_its_claims_and_whether_it_runs() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let id = core.insert(1).unwrap();
    let slot = |core: &TestCore| *core.task(id).unwrap();
    assert_eq!(slot(&core).claims(), 0);
    assert!(!slot(&core).is_running());
    core.claim(id);
    core.claim(id);
    assert_eq!(slot(&core).claims(), 2);
    core.start_resumption(id, false).unwrap();
    assert!(slot(&core).is_running());
    assert!(!core.is_idle(id), "a running task is not idle");
    core.end_resumption(id);
    assert!(!slot(&core).is_running());
    assert!(core.is_idle(id));
}

#[test]
fn a_task_has_pending_work_while_a_timer_a_deferral_or_a_suspension_names_it() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let id = core.insert(1).unwrap();
    assert!(!core.task(id).unwrap().has_pending());
    assert!(core.is_idle(id));
    // A timer alone.
    assert!(core.push_timer(secs(1), resume_timer(id)));
    assert!(core.task(id).unwrap().has_pending());
    assert!(!core.is_idle(id));
    assert_eq!(due(&mut core, secs(1)), vec![(id, true)]);
    assert!(core.fire_resume_timer(id));
    assert!(!core.task(id).unwrap().has_pending());
    // A deferral alone.
    assert!(core.push_deferred(deferred(id, 0)));
    assert!(core.task(id).unwrap().has_pending());
    assert!(!core.is_idle(id));
    core.pop_deferred().unwrap();
    assert!(!core.task(id).unwrap().has_pending());
    // A suspension alone (an untimed wait holds no timer).
    core.file_wait(id, secs(0), None).unwrap();
    assert!(core.task(id).unwrap().has_pending());
    assert!(!core.is_idle(id));
    core.check_counts();
}

#[test]
fn the_table_is_idle_only_when_every_slot_is_free_again() {
    let mut core = TestCore::new(SchedulerId::fresh());
    assert!(!core.is_idle_and_larger_than(0), "no slot was ever made");
    let a = core.insert(1).unwrap();
    let b = core.insert(2).unwrap();
    assert!(!core.is_idle_and_larger_than(0), "two occupied");
    core.free(a).unwrap();
    core.recycle(a.slot());
    assert!(!core.is_idle_and_larger_than(0), "one still occupied");
    core.free(b).unwrap();
    assert!(
        !core.is_idle_and_larger_than(0),
        "freed but not recycled yet"
    );
    core.recycle(b.slot());
    assert!(core.is_idle_and_larger_than(1));
    assert!(!core.is_idle_and_larger_than(2), "larger than two slots");
    core.trim();
    assert!(!core.is_idle_and_larger_than(0), "trimmed: no slot left");
}

#[test]
fn a_core_knows_no_task_of_another_scheduler_with_the_same_slot() {
    let mut ours = TestCore::new(SchedulerId::fresh());
    let mut theirs = TestCore::new(SchedulerId::fresh());
    let id = ours.insert(1).unwrap();
    let foreign = theirs.insert(1).unwrap();
    assert_eq!(id.as_u64(), foreign.as_u64());
    assert!(ours.owns(id));
    assert!(!ours.owns(foreign));
    assert!(ours.task(foreign).is_none());
    assert_eq!(ours.next_token(foreign), None);
    ours.claim(foreign);
    assert_eq!(
        ours.task(id).unwrap().claims(),
        0,
        "a foreign claim touches nothing"
    );
    assert!(ours.free(foreign).is_none());
    assert!(ours.task(id).is_some());
}

#[test]
fn a_stale_id_reaches_nothing_once_its_slot_holds_another_task() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let old = core.insert(1).unwrap();
    core.free(old).unwrap();
    core.recycle(old.slot());
    let new = core.insert(2).unwrap();
    assert_eq!(new.slot(), old.slot());
    assert_ne!(new, old);
    assert!(core.task(old).is_none());
    assert_eq!(core.next_token(old), None);
    core.claim(old);
    assert_eq!(
        core.task(new).unwrap().claims(),
        0,
        "the stale claim touches nothing"
    );
    assert!(!core.set_suspension(old, Suspension::LuaFuture { token: 1 }));
    assert_eq!(core.task(new).unwrap().suspension(), Suspension::None);
    core.check_counts();
}

#[test]
fn find_takes_the_slot_and_the_thread_both() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let a = core.insert(10).unwrap();
    let b = core.insert(20).unwrap();
    assert_eq!(core.find(a.slot(), 10), Some(a));
    assert_eq!(core.find(b.slot(), 20), Some(b));
    // Another embedder's mark on a thread names a slot that holds another thread.
    assert_eq!(core.find(a.slot(), 20), None);
    assert_eq!(core.find(7, 10), None);
    assert_eq!(core.task_count(), 2);
    assert_eq!(core.task_ids(), vec![a, b]);
    core.free(a).unwrap();
    assert_eq!(core.find(a.slot(), 10), None);
    assert_eq!(core.task_count(), 1);
    assert_eq!(core.task_ids(), vec![b]);
}

#[test]
fn the_blocked_set_mark_reports_what_it_was() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let id = core.insert(1).unwrap();
    assert_eq!(core.set_in_blocked_set(id, true), Some(false));
    assert_eq!(core.set_in_blocked_set(id, true), Some(true));
    assert_eq!(core.set_in_blocked_set(id, false), Some(true));
    core.free(id).unwrap();
    assert_eq!(core.set_in_blocked_set(id, true), None, "a freed task");
}

#[test]
fn stale_timers_are_compacted_only_once_they_outnumber_live_ones_by_the_margin() {
    let mut core = TestCore::new(SchedulerId::fresh());
    assert!(!core.has_timers());
    let id = core.insert(1).unwrap();
    // One live wait; each new wait makes the previous one's timer stale.
    for _ in 0..67 {
        core.file_wait(id, secs(0), Some(secs(100))).unwrap();
    }
    assert!(core.has_timers());
    assert!(core.has_work());
    let mut stale = 0;
    // 67 timers, 1 live: past the margin (2 * 1 live + 64 = 66 timers), so compacted.
    core.compact_timers(|_| stale += 1);
    assert_eq!(stale, 66);
    assert_eq!(due(&mut core, secs(100)).len(), 1);
    // Exactly at the margin (66 timers, 1 live) nothing is compacted.
    for _ in 0..66 {
        core.file_wait(id, secs(0), Some(secs(200))).unwrap();
    }
    let mut stale = 0;
    core.compact_timers(|_| stale += 1);
    assert_eq!(stale, 0);
    core.file_wait(id, secs(0), Some(secs(200))).unwrap();
    core.compact_timers(|_| stale += 1);
    assert_eq!(stale, 66);
    core.check_counts();
}

#[test]
fn trim_keeps_queued_timers_and_deferrals() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let id = core.insert(1).unwrap();
    assert!(core.push_timer(secs(5), resume_timer(id)));
    assert!(core.push_deferred(deferred(id, 1)));
    // The task goes (trim needs none left); its entries stay queued, stale, until they surface.
    core.free(id).unwrap();
    core.recycle(id.slot());
    core.trim();
    assert!(core.has_timers(), "a timer outlives the trim");
    assert_eq!(due(&mut core, secs(5)), vec![(id, false)]);
    assert!(
        core.pop_deferred().is_some(),
        "a deferral outlives the trim"
    );
}

#[test]
fn a_core_is_in_a_cycle_only_between_enter_and_leave() {
    let mut core = TestCore::new(SchedulerId::fresh());
    assert!(!core.in_cycle());
    assert!(core.enter_cycle());
    assert!(core.in_cycle());
    core.leave_cycle();
    assert!(!core.in_cycle());
}

#[test]
fn counts_agree_with_the_slots_in_every_kind_of_pending_work() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let waiting = core.insert(1).unwrap();
    let queued = core.insert(2).unwrap();
    let blocked = core.insert(3).unwrap();
    core.file_wait(waiting, secs(0), Some(secs(1))).unwrap();
    assert!(core.push_deferred(deferred(queued, 1)));
    assert!(core.block_on_future(blocked, 1, true));
    assert!(core.has_work());
    core.check_counts();
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "live timers")]
fn check_counts_catches_a_wrong_timer_count() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let id = core.insert(1).unwrap();
    core.file_wait(id, secs(0), Some(secs(1))).unwrap();
    core.live_timers += 1;
    core.check_counts();
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "live deferrals")]
fn check_counts_catches_a_wrong_deferral_count() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let id = core.insert(1).unwrap();
    assert!(core.push_deferred(deferred(id, 1)));
    core.live_deferred += 1;
    core.check_counts();
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "awaiting tasks")]
fn check_counts_catches_a_wrong_awaiting_count() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let id = core.insert(1).unwrap();
    assert!(core.block_on_future(id, 1, false));
    core.awaiting += 1;
    core.check_counts();
}

#[test]
fn each_kind_of_pending_work_alone_is_work() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let id = core.insert(1).unwrap();
    assert!(core.push_deferred(deferred(id, 1)));
    assert!(core.has_work(), "a deferral alone");
    core.pop_deferred().unwrap();
    assert!(!core.has_work());
    assert!(core.block_on_future(id, 1, true));
    assert!(core.has_work(), "a future alone");
    core.set_suspension(id, Suspension::None);
    assert!(!core.has_work());
    core.file_wait(id, secs(0), Some(secs(1))).unwrap();
    assert!(core.has_work(), "a timer alone");
}

#[test]
fn the_compaction_margin_grows_with_the_live_timers() {
    // Two live waits: compaction starts past 2 * 2 + 64 = 68 timers.
    let mut core = TestCore::new(SchedulerId::fresh());
    let a = core.insert(1).unwrap();
    let b = core.insert(2).unwrap();
    core.file_wait(b, secs(0), Some(secs(100))).unwrap();
    for _ in 0..67 {
        core.file_wait(a, secs(0), Some(secs(100))).unwrap();
    }
    let mut stale = 0;
    core.compact_timers(|_| stale += 1);
    assert_eq!(stale, 0, "68 timers, 2 live: within the margin");
    core.file_wait(a, secs(0), Some(secs(100))).unwrap();
    core.compact_timers(|_| stale += 1);
    assert_eq!(stale, 67, "69 timers, 2 live: compacted");
    core.check_counts();
}

#[test]
fn a_task_made_during_a_resumption_is_the_resumed_tasks_and_of_its_script() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let root = core.insert(1).unwrap();
    let lineage = core.lineage(root).unwrap();
    assert_eq!((lineage.creator, lineage.script), (None, Some(root)));
    core.start_resumption(root, true).unwrap();
    let child = core.insert(2).unwrap();
    core.start_resumption(child, true).unwrap();
    let grandchild = core.insert(3).unwrap();
    core.end_resumption(child);
    let sibling = core.insert(4).unwrap();
    core.end_resumption(root);
    let other_root = core.insert(5).unwrap();
    let of = |core: &TestCore, id| core.lineage(id).map(|l| (l.creator, l.script));
    assert_eq!(of(&core, child), Some((Some(root), Some(root))));
    assert_eq!(of(&core, grandchild), Some((Some(child), Some(root))));
    assert_eq!(of(&core, sibling), Some((Some(root), Some(root))));
    assert_eq!(of(&core, other_root), Some((None, Some(other_root))));
    assert_eq!(
        core.tasks_of_script(root),
        [root, child, grandchild, sibling]
    );
    // The script outlives its first task.
    core.free(root).unwrap();
    assert_eq!(core.tasks_of_script(root), [child, grandchild, sibling]);
    assert_eq!(of(&core, child), Some((Some(root), Some(root))));
}

#[test]
fn no_task_is_made_in_a_script_being_ended() {
    let mut core = TestCore::new(SchedulerId::fresh());
    let root = core.insert(1).unwrap();
    assert!(core.start_ending(root));
    assert!(!core.start_ending(root), "ending already");
    core.start_resumption(root, true).unwrap();
    assert_eq!(
        core.insert_from(2, Origin::Running),
        Err(NotMade::ScriptEnding(root))
    );
    let given = Lineage {
        creator: Some(root),
        script: Some(root),
    };
    assert_eq!(
        core.insert_from(3, Origin::Given(given)),
        Err(NotMade::ScriptEnding(root))
    );
    assert!(
        core.insert_from(4, Origin::Host).is_ok(),
        "a root of its own"
    );
    core.stop_ending(root);
    assert!(core.insert_from(5, Origin::Running).is_ok());
    core.end_resumption(root);
}
