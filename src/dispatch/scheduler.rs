//! The scheduling rules of one integration, pure: no I/O, no clock of its own (times are passed
//! in), no store. The engine ([`super::engine`]) feeds it events, asks it what to start, and tells
//! it what each attempt came to; it writes the decisions to the store and sends the requests.
//!
//! # Rules
//! - One first-in first-out queue per wedding; at most one event of a wedding is in flight or
//!   waiting for a retry, and the next event waits for the previous one's final state. A wedding
//!   waiting for a retry delays only itself: other weddings stay ready.
//! - Coalescing: when the head of a wedding's queue has a newer event of the same field behind it,
//!   the head is superseded (never sent) and the next one is considered, so the newest value
//!   always survives. A head already sent once is never superseded: a timed-out attempt may still
//!   land later (a timeout is not a "no"), and landing after the newer value would put the older
//!   value last. It is retried until final, and the newer event follows it.
//! - Priority: ready weddings are taken by their head's priority (critical, important, optional),
//!   oldest first within a priority; this matters only when more weddings are ready than may start.
//! - A requeued dead letter goes back into its wedding's queue in id order, never before the event
//!   in flight.
//! - Caps: [`Lanes::queued`] counts what is held (the engine stops loading past its bound) and
//!   [`Lanes::in_flight`] what was started and has not landed.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::fields::Priority;
use crate::store::record::EventId;

/// An event waiting in a wedding's queue; `P` is what is sent (the engine's payload).
#[derive(Clone, Debug)]
pub struct Entry<P> {
    pub id: EventId,
    pub field: Option<Arc<str>>,
    pub priority: Priority,
    pub payload: P,
    pub queued_at: Instant,
    /// The commit time, Unix microseconds (for the commit-to-delivered latency).
    pub commit_time: i64,
    pub attempts: u32,
    pub last_status: Option<u16>,
    /// A dead letter sent again on request; tracked by the dead-letter tree, not the floor.
    pub requeued: bool,
}

impl<P> Entry<P> {
    pub fn new(id: EventId, field: Option<&str>, priority: Priority, payload: P, now: Instant) -> Entry<P> {
        Entry {
            id,
            field: field.map(Arc::from),
            priority,
            payload,
            queued_at: now,
            commit_time: 0,
            attempts: 0,
            last_status: None,
            requeued: false,
        }
    }
}

/// Where an event the dispatcher holds stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitState {
    InFlight,
    RetryWait,
    Queued,
}

impl WaitState {
    /// The label of `/deliveries/queue` and the admin `queue` view.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitState::InFlight => "in_flight",
            WaitState::RetryWait => "retry_wait",
            WaitState::Queued => "queued",
        }
    }
}

/// One wedding's queue in order, each event with where it stands.
pub type WeddingView<'a, P> = (&'a Arc<str>, Vec<(&'a Entry<P>, WaitState)>);

struct WeddingQ<P> {
    fifo: VecDeque<Entry<P>>,
    /// How many entries of each field wait, for coalescing.
    fields: HashMap<Arc<str>, u32>,
    /// In a ready queue (at most once).
    in_ready: bool,
    in_flight: bool,
    /// Waiting for a retry until then.
    not_before: Option<Instant>,
}

impl<P> Default for WeddingQ<P> {
    fn default() -> Self {
        WeddingQ {
            fifo: VecDeque::new(),
            fields: HashMap::new(),
            in_ready: false,
            in_flight: false,
            not_before: None,
        }
    }
}

/// What [`Lanes::pick`] picked: the wedding, the events superseded on the way (in order, to be
/// recorded as such) and the event to send, now in flight.
#[derive(Debug)]
pub struct Picked<P> {
    pub wedding: Arc<str>,
    pub superseded: Vec<Entry<P>>,
    pub id: EventId,
    pub field: Option<Arc<str>>,
    pub payload: P,
}

/// One integration's per-wedding queues.
pub struct Lanes<P> {
    weddings: HashMap<Arc<str>, WeddingQ<P>>,
    /// Weddings whose next event may go now, by that event's priority.
    ready: [VecDeque<Arc<str>>; 3],
    queued: usize,
    /// Ids held (not requeued ones), for the floor.
    pending: BTreeSet<EventId>,
    in_flight: usize,
    /// Nothing becomes ready while disabled.
    disabled: bool,
}

impl<P> Default for Lanes<P> {
    fn default() -> Self {
        Lanes {
            weddings: HashMap::new(),
            ready: Default::default(),
            queued: 0,
            pending: BTreeSet::new(),
            in_flight: 0,
            disabled: false,
        }
    }
}

fn rank(p: Priority) -> usize {
    match p {
        Priority::Critical => 0,
        Priority::Important => 1,
        Priority::Optional => 2,
    }
}

impl<P: Clone> Lanes<P> {
    /// Events held, in flight included.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Events started and not landed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The oldest event held that is not a requeued dead letter.
    pub fn first_pending(&self) -> Option<EventId> {
        self.pending.first().copied()
    }

    /// Whether some wedding's next event may start now.
    pub fn has_ready(&self) -> bool {
        self.ready.iter().any(|r| !r.is_empty())
    }

    /// Disabled lanes make nothing ready; enabling them again wakes every wedding.
    pub fn set_disabled(&mut self, disabled: bool) {
        self.disabled = disabled;
        if !disabled {
            self.wake_all();
        }
    }

    /// Weddings with an event held.
    pub fn weddings(&self) -> impl Iterator<Item = &Arc<str>> {
        self.weddings.keys()
    }

    /// Each wedding's queue in order with its head's state, weddings by their head's id.
    pub fn waiting(&self) -> Vec<WeddingView<'_, P>> {
        let mut out: Vec<_> = self
            .weddings
            .iter()
            .map(|(k, w)| {
                let entries = w
                    .fifo
                    .iter()
                    .enumerate()
                    .map(|(n, e)| {
                        let state = match (n, w.in_flight, w.not_before.is_some()) {
                            (0, true, _) => WaitState::InFlight,
                            (0, _, true) => WaitState::RetryWait,
                            _ => WaitState::Queued,
                        };
                        (e, state)
                    })
                    .collect();
                (k, entries)
            })
            .collect();
        out.sort_by_key(|(_, entries): &WeddingView<'_, P>| entries.first().map(|(e, _)| e.id));
        out
    }

    /// The head of every wedding's queue.
    pub fn heads(&self) -> impl Iterator<Item = &Entry<P>> {
        self.weddings.values().filter_map(|w| w.fifo.front())
    }

    /// Appends an event to its wedding's queue (a requeued one goes in id order, never before the
    /// event in flight).
    pub fn push(&mut self, wedding: &str, entry: Entry<P>) {
        if !entry.requeued {
            self.pending.insert(entry.id);
        }
        self.queued += 1;
        let key = match self.weddings.get_key_value(wedding) {
            Some((k, _)) => k.clone(),
            None => Arc::from(wedding),
        };
        let w = self.weddings.entry(key.clone()).or_default();
        if let Some(f) = &entry.field {
            *w.fields.entry(f.clone()).or_default() += 1;
        }
        let start = usize::from(w.in_flight);
        let at = if entry.requeued {
            (start..w.fifo.len())
                .find(|&i| w.fifo[i].id > entry.id)
                .unwrap_or(w.fifo.len())
        } else {
            w.fifo.len()
        };
        w.fifo.insert(at, entry);
        self.make_ready(&key);
    }

    /// The next event to start: the first ready wedding by priority, its head after coalescing.
    /// The event is in flight until [`Lanes::landed`].
    pub fn pick(&mut self) -> Option<Picked<P>> {
        let wedding = loop {
            let w = self.ready.iter_mut().find_map(|r| r.pop_front())?;
            if let Some(q) = self.weddings.get_mut(&w) {
                q.in_ready = false;
                if !q.in_flight && q.not_before.is_none() && !q.fifo.is_empty() {
                    break w;
                }
            }
        };
        let mut superseded = Vec::new();
        loop {
            let w = &self.weddings[&wedding];
            let head = w.fifo.front().expect("a ready wedding has a head");
            let newer_waits = head.attempts == 0
                && head
                    .field
                    .as_ref()
                    .is_some_and(|f| w.fields.get(f).copied().unwrap_or(0) > 1);
            if !newer_waits {
                break;
            }
            superseded.push(self.pop(&wedding));
        }
        let w = self.weddings.get_mut(&wedding).expect("still held");
        let head = w.fifo.front_mut().expect("the newest of its field remains");
        w.in_flight = true;
        head.attempts += 1;
        self.in_flight += 1;
        Some(Picked {
            id: head.id,
            field: head.field.clone(),
            payload: head.payload.clone(),
            wedding,
            superseded,
        })
    }

    /// The attempt in flight for `wedding` came back: its head (still queued) is returned for the
    /// caller to settle with [`Lanes::finish`] or [`Lanes::retry`], or to leave (a disabled
    /// integration keeps it).
    pub fn landed(&mut self, wedding: &str) -> Option<&mut Entry<P>> {
        let w = self.weddings.get_mut(wedding)?;
        if w.in_flight {
            w.in_flight = false;
            self.in_flight -= 1;
        }
        w.fifo.front_mut()
    }

    /// The head of a wedding's queue reached a final state (delivered or dead letter): it leaves,
    /// and the wedding's next event is ready (or the wedding is idle).
    pub fn finish(&mut self, wedding: &Arc<str>) -> Entry<P> {
        let e = self.pop(wedding);
        match self.weddings.get(wedding) {
            Some(w) if w.fifo.is_empty() && !w.in_flight => {
                self.weddings.remove(wedding);
            }
            Some(_) => self.make_ready(wedding),
            None => {}
        }
        e
    }

    /// The head of a wedding's queue waits until `at` for its next attempt.
    pub fn retry(&mut self, wedding: &str, at: Instant) {
        if let Some(w) = self.weddings.get_mut(wedding) {
            w.not_before = Some(at);
        }
    }

    /// A retry timer fired: the wedding is ready if it still waits for that time.
    pub fn wake(&mut self, wedding: &Arc<str>, at: Instant) {
        if let Some(w) = self.weddings.get_mut(wedding) {
            if w.not_before == Some(at) {
                w.not_before = None;
                self.make_ready(wedding);
            }
        }
    }

    /// Whether the head of a wedding's queue may be settled now (held, not in flight).
    pub fn idle_head(&self, wedding: &str) -> bool {
        self.weddings
            .get(wedding)
            .is_some_and(|w| !w.fifo.is_empty() && !w.in_flight)
    }

    /// Every wedding with events and nothing in flight is ready now, oldest head first (the
    /// endpoint is back, or the integration was reconfigured or resumed).
    pub fn wake_all(&mut self) {
        if self.disabled {
            return;
        }
        for r in &mut self.ready {
            r.clear();
        }
        let mut keys: Vec<(EventId, Arc<str>)> = Vec::new();
        for (k, w) in self.weddings.iter_mut() {
            w.in_ready = false;
            w.not_before = None;
            if let Some(head) = w.fifo.front() {
                keys.push((head.id, k.clone()));
            }
        }
        keys.sort();
        for (_, k) in keys {
            self.make_ready(&k);
        }
    }

    /// Puts a wedding in its ready queue when its next event may go: it has one, nothing of it is
    /// in flight or waiting for a retry, and the lanes are enabled.
    fn make_ready(&mut self, wedding: &Arc<str>) {
        let Some(w) = self.weddings.get_mut(wedding) else {
            return;
        };
        if w.in_ready || w.in_flight || w.not_before.is_some() || self.disabled {
            return;
        }
        if let Some(head) = w.fifo.front() {
            w.in_ready = true;
            self.ready[rank(head.priority)].push_back(wedding.clone());
        }
    }

    /// Removes the head of a wedding's queue.
    fn pop(&mut self, wedding: &Arc<str>) -> Entry<P> {
        let w = self.weddings.get_mut(wedding).expect("wedding has a queue");
        let e = w.fifo.pop_front().expect("queue has a head");
        if let Some(f) = &e.field {
            if let Some(n) = w.fields.get_mut(f) {
                *n -= 1;
                if *n == 0 {
                    w.fields.remove(f);
                }
            }
        }
        self.pending.remove(&e.id);
        self.queued -= 1;
        e
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::lsn::Lsn;

    fn id(n: u64) -> EventId {
        EventId {
            commit_lsn: Lsn(n),
            index: 0,
        }
    }

    fn entry(n: u64, field: &str, priority: Priority) -> Entry<u64> {
        Entry::new(id(n), Some(field), priority, n, Instant::now())
    }

    fn start(l: &mut Lanes<u64>) -> Option<(String, u64, Vec<u64>)> {
        l.pick().map(|p| {
            (
                p.wedding.to_string(),
                p.payload,
                p.superseded.iter().map(|e| e.payload).collect(),
            )
        })
    }

    fn deliver(l: &mut Lanes<u64>, wedding: &str) -> u64 {
        l.landed(wedding).expect("a head");
        l.finish(&Arc::from(wedding)).payload
    }

    #[test]
    fn a_weddings_events_go_one_at_a_time_in_order() {
        let mut l = Lanes::default();
        for n in 1..=3 {
            l.push("w", entry(n, &format!("f{n}"), Priority::Important));
        }
        assert_eq!(start(&mut l), Some(("w".into(), 1, vec![])));
        assert_eq!(start(&mut l), None, "one in flight per wedding");
        assert_eq!((l.queued(), l.in_flight()), (3, 1));
        assert_eq!(deliver(&mut l, "w"), 1);
        assert_eq!(start(&mut l), Some(("w".into(), 2, vec![])));
        assert_eq!(deliver(&mut l, "w"), 2);
        assert_eq!(start(&mut l), Some(("w".into(), 3, vec![])));
        assert_eq!(deliver(&mut l, "w"), 3);
        assert_eq!((l.queued(), l.in_flight(), l.weddings().count()), (0, 0, 0));
    }

    #[test]
    fn only_the_newest_value_of_a_field_is_sent() {
        let mut l = Lanes::default();
        l.push("w", entry(1, "guests", Priority::Critical));
        l.push("w", entry(2, "budget", Priority::Critical));
        l.push("w", entry(3, "guests", Priority::Critical));
        l.push("w", entry(4, "guests", Priority::Critical));
        // the older guests values go as superseded; budget, which nothing newer replaces, goes
        assert_eq!(start(&mut l), Some(("w".into(), 2, vec![1])));
        assert_eq!(deliver(&mut l, "w"), 2);
        assert_eq!(start(&mut l), Some(("w".into(), 4, vec![3])));
        assert_eq!(deliver(&mut l, "w"), 4);
        assert_eq!(l.queued(), 0);
    }

    #[test]
    fn an_event_already_sent_once_is_retried_not_superseded_by_a_newer_value() {
        let mut l = Lanes::default();
        let t0 = Instant::now();
        l.push("w", entry(1, "guests", Priority::Critical));
        assert_eq!(start(&mut l), Some(("w".into(), 1, vec![])));
        // it timed out: the request may still reach the receiver
        l.landed("w").unwrap();
        l.retry("w", t0);
        l.push("w", entry(2, "guests", Priority::Critical));
        l.wake(&Arc::from("w"), t0);
        assert_eq!(
            start(&mut l),
            Some(("w".into(), 1, vec![])),
            "sent again, not superseded"
        );
        assert_eq!(deliver(&mut l, "w"), 1);
        assert_eq!(start(&mut l), Some(("w".into(), 2, vec![])));
    }

    #[test]
    fn under_backlog_critical_goes_before_important_before_optional() {
        let mut l = Lanes::default();
        l.push("a", entry(1, "f", Priority::Optional));
        l.push("b", entry(2, "f", Priority::Important));
        l.push("c", entry(3, "f", Priority::Critical));
        l.push("d", entry(4, "f", Priority::Critical));
        let order: Vec<u64> = std::iter::from_fn(|| start(&mut l).map(|(_, n, _)| n)).collect();
        assert_eq!(order, [3, 4, 2, 1]);
    }

    #[test]
    fn a_wedding_waiting_for_a_retry_delays_only_itself() {
        let mut l = Lanes::default();
        let t0 = Instant::now();
        l.push("a", entry(1, "f", Priority::Critical));
        l.push("a", entry(2, "g", Priority::Critical));
        l.push("b", entry(3, "f", Priority::Optional));
        assert_eq!(start(&mut l).unwrap().1, 1);
        let head = l.landed("a").unwrap();
        head.last_status = Some(503);
        let at = t0 + Duration::from_secs(5);
        l.retry("a", at);
        assert_eq!(start(&mut l).unwrap().1, 3, "b goes while a waits");
        assert_eq!(start(&mut l), None, "a's next event waits behind its head");
        l.wake(&Arc::from("a"), t0 + Duration::from_secs(1));
        assert_eq!(start(&mut l), None, "a stale timer wakes nothing");
        l.wake(&Arc::from("a"), at);
        let again = l.pick().unwrap();
        assert_eq!((again.payload, l.waiting()[0].1[0].0.attempts), (1, 2));
    }

    #[test]
    fn a_requeued_dead_letter_goes_in_id_order_but_never_before_the_event_in_flight() {
        let mut l = Lanes::default();
        l.push("w", entry(5, "a", Priority::Important));
        l.push("w", entry(9, "b", Priority::Important));
        assert_eq!(start(&mut l).unwrap().1, 5);
        for n in [2, 7] {
            let mut e = entry(n, &format!("r{n}"), Priority::Important);
            e.requeued = true;
            l.push("w", e);
        }
        let ids: Vec<u64> = l.waiting()[0].1.iter().map(|(e, _)| e.payload).collect();
        assert_eq!(ids, [5, 2, 7, 9]);
        assert_eq!(l.first_pending(), Some(id(5)), "requeued ones are not pending");
    }

    #[test]
    fn disabled_lanes_start_nothing_until_enabled_again() {
        let mut l = Lanes::default();
        l.set_disabled(true);
        l.push("a", entry(2, "f", Priority::Critical));
        l.push("b", entry(1, "f", Priority::Critical));
        assert_eq!(start(&mut l), None);
        l.set_disabled(false);
        assert_eq!(start(&mut l).unwrap().1, 1, "oldest head first after a wake");
        assert_eq!(start(&mut l).unwrap().1, 2);
    }

    /// What a random run does next.
    #[derive(Clone, Debug)]
    enum Op {
        Push { wedding: u8, field: u8, priority: u8 },
        Start,
        Land { pick: u8, outcome: u8 },
        Wake { pick: u8 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..5, 0u8..3, 0u8..3).prop_map(|(wedding, field, priority)| Op::Push { wedding, field, priority }),
            3 => Just(Op::Start),
            3 => (any::<u8>(), 0u8..4).prop_map(|(pick, outcome)| Op::Land { pick, outcome }),
            1 => any::<u8>().prop_map(|pick| Op::Wake { pick }),
        ]
    }

    const PRIORITIES: [Priority; 3] = [Priority::Critical, Priority::Important, Priority::Optional];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// Random pushes, starts, outcomes (delivered, retry, dead letter) and timers, then a
        /// drain: per wedding one in flight and ids never go back; the newest value of every
        /// field is sent last and never superseded; a ready wedding is always started, whatever
        /// the others do; the counts the caps rely on are exact.
        #[test]
        fn the_rules_hold_for_any_sequence(ops in prop::collection::vec(op(), 1..200)) {
            let t0 = Instant::now();
            let mut l: Lanes<u64> = Lanes::default();
            let mut next_id = 0u64;
            // the model
            let mut held: BTreeMap<String, Vec<(u64, u8)>> = BTreeMap::new();
            let mut in_flight: HashSet<String> = HashSet::new();
            let mut waiting: BTreeMap<String, Instant> = BTreeMap::new();
            let mut last_started: BTreeMap<String, u64> = BTreeMap::new();
            let mut newest: BTreeMap<(String, u8), u64> = BTreeMap::new();
            let mut sent_last: BTreeMap<(String, u8), u64> = BTreeMap::new();
            let mut superseded: HashSet<u64> = HashSet::new();
            let mut clock = 0u64;

            let mut run_op = |op: Op, l: &mut Lanes<u64>, draining: bool| -> Result<(), TestCaseError> {
                match op {
                    Op::Push { wedding, field, priority } => {
                        next_id += 1;
                        let w = format!("w{wedding}");
                        l.push(&w, Entry::new(id(next_id), Some(&format!("f{field}")), PRIORITIES[priority as usize], next_id, t0));
                        held.entry(w.clone()).or_default().push((next_id, field));
                        newest.insert((w, field), next_id);
                    }
                    Op::Start => {
                        let eligible = held.iter().any(|(w, q)| !q.is_empty() && !in_flight.contains(w) && !waiting.contains_key(w));
                        match l.pick() {
                            None => prop_assert!(!eligible, "a ready wedding was not started"),
                            Some(p) => {
                                let w = p.wedding.to_string();
                                prop_assert!(in_flight.insert(w.clone()), "two in flight for {}", w);
                                prop_assert!(!waiting.contains_key(&w));
                                let q = held.get_mut(&w).unwrap();
                                for s in &p.superseded {
                                    let (n, f) = q.remove(0);
                                    prop_assert_eq!(n, s.payload);
                                    prop_assert_eq!(s.attempts, 0, "an event sent before was superseded");
                                    prop_assert!(q.iter().any(|(_, g)| *g == f), "superseded without a newer value of its field");
                                    superseded.insert(n);
                                }
                                prop_assert_eq!(q[0].0, p.payload, "not the head of its wedding");
                                let prev = last_started.insert(w.clone(), p.payload).unwrap_or(0);
                                prop_assert!(p.payload >= prev, "wedding {} went back from {} to {}", w, prev, p.payload);
                            }
                        }
                    }
                    Op::Land { pick, outcome } => {
                        let flying: Vec<String> = in_flight.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
                        if flying.is_empty() {
                            return Ok(());
                        }
                        let w = flying[pick as usize % flying.len()].clone();
                        in_flight.remove(&w);
                        l.landed(&w).unwrap();
                        let outcome = if draining { 0 } else { outcome };
                        if outcome == 3 {
                            clock += 1;
                            let at = t0 + Duration::from_secs(clock);
                            l.retry(&w, at);
                            waiting.insert(w, at);
                        } else {
                            let e = l.finish(&Arc::from(w.as_str()));
                            let (n, f) = held.get_mut(&w).unwrap().remove(0);
                            prop_assert_eq!(n, e.payload);
                            // delivered (0, 1) or a dead letter (2): either way it was sent
                            sent_last.insert((w, f), n);
                        }
                    }
                    Op::Wake { pick } => {
                        let ws: Vec<(String, Instant)> = waiting.iter().map(|(w, at)| (w.clone(), *at)).collect();
                        if ws.is_empty() {
                            return Ok(());
                        }
                        let (w, at) = ws[pick as usize % ws.len()].clone();
                        waiting.remove(&w);
                        l.wake(&Arc::from(w.as_str()), at);
                    }
                }
                prop_assert_eq!(l.queued(), held.values().map(Vec::len).sum::<usize>());
                prop_assert_eq!(l.in_flight(), in_flight.len());
                prop_assert_eq!(l.first_pending().map(|e| e.commit_lsn.0), held.values().flatten().map(|(n, _)| *n).min());
                Ok(())
            };
            for op in ops {
                run_op(op, &mut l, false)?;
            }
            // drain: every timer fires, every attempt is delivered
            for _ in 0..10_000 {
                if l.queued() == 0 {
                    break;
                }
                for pick in 0..8 {
                    run_op(Op::Wake { pick }, &mut l, true)?;
                }
                run_op(Op::Start, &mut l, true)?;
                run_op(Op::Land { pick: 0, outcome: 0 }, &mut l, true)?;
            }
            prop_assert_eq!(l.queued(), 0);
            for (key, n) in &newest {
                prop_assert_eq!(sent_last.get(key), Some(n), "the newest value of {:?} was not the last sent", key);
                prop_assert!(!superseded.contains(n));
            }
        }
    }
}
