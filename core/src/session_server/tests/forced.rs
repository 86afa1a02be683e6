//! A forced end that is confirmed (S1604/S1605): the server follows each
//! end trigger's result, resends an unacknowledged one, reports how each
//! party answered, and adds late end notifications to the record (S1606).

use std::vec::Vec;

use super::harness::*;
use super::*;
use crate::wire::TriggerResult;

fn settled(w: &World) -> Vec<ForcedEnd> {
    w.events_since(0)
        .into_iter()
        .filter_map(|e| match e {
            SessionEvent::ForcedEndSettled(f) => Some(f),
            _ => None,
        })
        .collect()
}

/// Answers the end triggers not yet answered whose device is `device`.
fn answer_end(w: &mut World, device: u64, outcome: TriggerOutcome, answered: &mut Vec<u32>) {
    for end in w.ts_end_triggers() {
        if end.device_id.0 != device || answered.contains(&end.op_id) {
            continue;
        }
        answered.push(end.op_id);
        w.ts_send(&Message::TriggerResult(TriggerResult {
            op_id: end.op_id,
            outcome,
        }));
    }
}

#[test]
fn s1604_s1605_forced_end_is_confirmed_by_both_delivered_triggers() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    let t3 = w.term("term3", ListMode);
    let id = w.establish(t3, t1, 1, 600);
    w.ss.end_session(w.now, id).unwrap();
    w.pump();
    let mut answered = Vec::new();
    let (d1, d3) = (w.device(t1), w.device(t3));
    answer_end(&mut w, d1, TriggerOutcome::Delivered, &mut answered);
    assert!(settled(&w).is_empty(), "settled with one party unanswered");
    w.advance(secs(1));
    answer_end(&mut w, d3, TriggerOutcome::Delivered, &mut answered);
    let s = settled(&w);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].session_id, id);
    assert_eq!(
        (s[0].requester.as_str(), s[0].target.as_str()),
        ("term3", "term1")
    );
    assert_eq!(s[0].requester_end, EndConfirmation::Confirmed);
    assert_eq!(s[0].target_end, EndConfirmation::Confirmed);
    assert_eq!(s[0].waited, secs(1));
}

#[test]
fn s1605_lost_end_trigger_is_sent_again_and_then_confirmed() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    let t3 = w.term("term3", ListMode);
    let id = w.establish(t3, t1, 1, 600);
    w.ss.end_session(w.now, id).unwrap();
    w.pump();
    let (d1, d3) = (w.device(t1), w.device(t3));
    let mut answered = Vec::new();
    answer_end(&mut w, d3, TriggerOutcome::Delivered, &mut answered);
    // The target's trigger is lost: the trigger server's resends went
    // unacknowledged. The session server sends a fresh one.
    answer_end(&mut w, d1, TriggerOutcome::Unacknowledged, &mut answered);
    let to_target: Vec<_> = w
        .ts_end_triggers()
        .into_iter()
        .filter(|e| e.device_id.0 == d1)
        .collect();
    assert_eq!(
        to_target.len(),
        2,
        "the lost end trigger was not sent again"
    );
    assert_ne!(to_target[0].op_id, to_target[1].op_id);
    assert!(settled(&w).is_empty());
    // A late result of the superseded attempt changes nothing.
    w.ts_send(&Message::TriggerResult(TriggerResult {
        op_id: to_target[0].op_id,
        outcome: TriggerOutcome::Delivered,
    }));
    assert!(settled(&w).is_empty());
    answer_end(&mut w, d1, TriggerOutcome::Delivered, &mut answered);
    let s = settled(&w);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].target_end, EndConfirmation::Confirmed);
    assert_eq!(s[0].requester_end, EndConfirmation::Confirmed);
}

#[test]
fn s1605_party_that_never_confirms_is_reported_unacknowledged() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    let t3 = w.term("term3", ListMode);
    let id = w.establish(t3, t1, 1, 600);
    w.ss.end_session(w.now, id).unwrap();
    w.pump();
    let (d1, d3) = (w.device(t1), w.device(t3));
    let mut answered = Vec::new();
    // The requester ends and says so: that confirms it too.
    w.end_notification(t3, id, EndReason::Forced, 10);
    answer_end(&mut w, d3, TriggerOutcome::Delivered, &mut answered);
    for _ in 0..END_TRIGGER_ATTEMPTS {
        assert!(settled(&w).is_empty());
        answer_end(&mut w, d1, TriggerOutcome::Unacknowledged, &mut answered);
    }
    let sent = w
        .ts_end_triggers()
        .into_iter()
        .filter(|e| e.device_id.0 == d1)
        .count();
    assert_eq!(sent, usize::from(END_TRIGGER_ATTEMPTS));
    let s = settled(&w);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].requester_end, EndConfirmation::Confirmed);
    assert_eq!(s[0].target_end, EndConfirmation::Unacknowledged);
    // No answer at all: settled as NoAnswer when the record is written.
    let id2 = w.establish(t3, t1, 2, 600);
    w.ss.end_session(w.now, id2).unwrap();
    w.pump();
    answer_end(&mut w, d3, TriggerOutcome::Delivered, &mut answered);
    w.advance(END_GRACE);
    let s = settled(&w);
    assert_eq!(s.len(), 2);
    assert_eq!(s[1].session_id, id2);
    assert_eq!(s[1].requester_end, EndConfirmation::Confirmed);
    assert_eq!(s[1].target_end, EndConfirmation::NoAnswer);
    assert_eq!(s[1].waited, END_GRACE);
    let records = w.records();
    assert_eq!(records.last().map(|r| r.session_id), Some(id2));
}

#[test]
fn s1606_late_end_notification_adds_its_counts_to_the_record() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    let t3 = w.term("term3", ListMode);
    let t5 = w.term("term5", ListMode);
    let id = w.establish(t3, t1, 1, 600);
    w.ss.end_session(w.now, id).unwrap();
    w.pump();
    w.advance(END_GRACE);
    let records = w.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].reason, SessionEndReason::Forced);
    assert!(records[0].target_side.is_none());
    let facts_before = w.facts.len();
    // A stranger's notification for the session adds nothing.
    w.end_notification(t5, id, EndReason::Forced, 99);
    w.end_notification(t1, id, EndReason::Forced, 40);
    let late: Vec<LateReport> = w.facts[facts_before..]
        .iter()
        .filter_map(|f| match f {
            SessionFact::LateReport(l) => Some(*l),
            _ => None,
        })
        .collect();
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].session_id, id);
    assert_eq!(late[0].party, Party::Target);
    assert_eq!(late[0].report.bytes_sent, 40);
    assert_eq!(late[0].report.duration_ms, 1234);
    // The same side again: stale, not a second report.
    w.end_notification(t1, id, EndReason::Forced, 41);
    assert_eq!(
        w.facts[facts_before..]
            .iter()
            .filter(|f| matches!(f, SessionFact::LateReport(_)))
            .count(),
        1
    );
    // Too late: past the window it is stale.
    w.advance(LATE_REPORT_WINDOW);
    w.end_notification(t3, id, EndReason::Forced, 7);
    assert_eq!(
        w.facts[facts_before..]
            .iter()
            .filter(|f| matches!(f, SessionFact::LateReport(_)))
            .count(),
        1
    );
}

#[test]
fn s1606_an_end_notification_after_the_forced_end_settled_still_joins_the_record() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    let t3 = w.term("term3", ListMode);
    let id = w.establish(t3, t1, 1, 600);
    w.ss.end_session(w.now, id).unwrap();
    w.pump();
    let (d1, d3) = (w.device(t1), w.device(t3));
    let mut answered = Vec::new();
    w.end_notification(t3, id, EndReason::Forced, 10);
    answer_end(&mut w, d3, TriggerOutcome::Delivered, &mut answered);
    for _ in 0..END_TRIGGER_ATTEMPTS {
        answer_end(&mut w, d1, TriggerOutcome::Unacknowledged, &mut answered);
    }
    assert_eq!(settled(&w).len(), 1, "settled: the target never confirmed");
    // The frozen target wakes and reports, before the end grace ran out.
    w.end_notification(t1, id, EndReason::Forced, 40);
    w.advance(END_GRACE);
    let records = w.records();
    assert_eq!(records.len(), 1);
    let target = records[0].target_side.expect("the target's side");
    assert_eq!(target.bytes_sent, 40);
}

#[test]
fn s1604_forced_end_says_so_at_once_before_any_trigger_is_answered() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    let t3 = w.term("term3", ListMode);
    let id = w.establish(t3, t1, 1, 600);
    let before = w.events_since(0).len();
    w.ss.end_session(w.now, id).unwrap();
    w.pump();
    // No end trigger answered, no record yet: the relay is told now.
    let started: Vec<_> = w
        .events_since(before)
        .into_iter()
        .filter(|e| matches!(e, SessionEvent::ForcedEndStarted { session_id } if *session_id == id))
        .collect();
    assert_eq!(started.len(), 1);
    assert!(settled(&w).is_empty());
    assert!(!w
        .events_since(before)
        .iter()
        .any(|e| matches!(e, SessionEvent::SessionRecord(_))));
}
