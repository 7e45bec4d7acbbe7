//! A linearizability checker for histories of single-key operations: each key is a register
//! with put, get, delete and compare-and-swap, checked on its own (linearizability is local,
//! so a history is linearizable iff each key's sub-history is).
//!
//! The search is Wing & Gong's, with Lowe's memoisation of (linearized set, state) — the
//! algorithm of porcupine, which etcd's robustness tests use. Operations whose outcome is
//! unknown (the client timed out) are given a return time of "never": they may take effect
//! at any point after their call, or not at all (taking effect after everything else is the
//! same as not at all), and any output is accepted for them.
//!
//! Left alone, each such operation doubles the (linearized set, state) pairs to visit: a
//! CI run with 34 on one key gave up after ten million. So, each step exact (none changes
//! a verdict; the brute-force tests below check that):
//! - A value no read returned and no compare-and-swap expected is unobservable: every such
//!   value is the same state ("some value nobody looks at").
//! - An unknown operation is only placed where it changes the state: placed where it does
//!   not, it can as well go to the end.
//! - Unknown operations with the same input are interchangeable, so they are placed in the
//!   order they were called: the placed ones of each kind are always the earliest called,
//!   and are remembered as a count per kind rather than as a set.
//! - A configuration with the same known operations placed and the same state as one
//!   already reached, but at least as many unknown ones of every kind placed, is not
//!   searched: the unplaced ones of the first were called earlier, so it had every choice
//!   the second has. Known operations are tried before unknown ones, so the configurations
//!   with fewer unknown ones placed tend to come first.
//! - The search ends as soon as every operation with a known outcome is placed.

use std::collections::{BTreeMap, HashMap, HashSet};

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Input {
    Get,
    Put(String),
    Delete,
    /// Put `new` if the current value is `expected` (`None`: the key does not exist).
    Cas {
        expected: Option<String>,
        new: String,
    },
}

/// What it was told; `Unknown` when the request failed without a definite answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Value(Option<String>),
    Put,
    Deleted(i64),
    Cas(bool),
    Unknown,
}

/// One operation in a history. Times are nanoseconds on one monotonic clock.
#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    pub key: String,
    pub input: Input,
    pub output: Output,
    pub call: u64,
    /// `None` for an unknown outcome.
    pub ret: Option<u64>,
    /// Free text for reports (which member served it, at which revision).
    pub note: String,
}

type State = Option<String>;

/// The register's step: `None` if `output` cannot follow from `state`, else the new state.
fn step(state: &State, input: &Input, output: &Output) -> Option<State> {
    let unknown = *output == Output::Unknown;
    match input {
        Input::Get => match output {
            Output::Value(v) if v == state => Some(state.clone()),
            _ if unknown => Some(state.clone()),
            _ => None,
        },
        Input::Put(v) => match output {
            Output::Put | Output::Unknown => Some(Some(v.clone())),
            _ => None,
        },
        Input::Delete => match output {
            Output::Deleted(n) if *n == i64::from(state.is_some()) => Some(None),
            _ if unknown => Some(None),
            _ => None,
        },
        Input::Cas { expected, new } => {
            let succeeds = state == expected;
            match output {
                Output::Cas(ok) if *ok != succeeds => None,
                Output::Cas(_) | Output::Unknown => Some(if succeeds {
                    Some(new.clone())
                } else {
                    state.clone()
                }),
                _ => None,
            }
        }
    }
}

/// Why a history is not linearizable: the key and its operations, for the report.
#[derive(Debug)]
pub struct Violation {
    pub key: String,
    pub ops: Vec<Op>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "key {:?} has no linearization; the operations up to the first that cannot be \
             placed (by call time):",
            self.key
        )?;
        let t0 = self.ops.iter().map(|o| o.call).min().unwrap_or(0);
        for o in &self.ops {
            writeln!(
                f,
                "  client {} [{:.3} ms, {}] {:?} -> {:?} {}",
                o.client,
                (o.call - t0) as f64 / 1e6,
                o.ret.map_or("never".into(), |r| format!(
                    "{:.3} ms",
                    (r - t0) as f64 / 1e6
                )),
                o.input,
                o.output,
                o.note
            )?;
        }
        Ok(())
    }
}

/// Checks every key's history from an empty register; returns the first violation.
pub fn check(history: &[Op]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<Op>> = BTreeMap::new();
    // A read whose answer never came constrains nothing (it changes no state and any state
    // explains it), so it is left out: each one, open to the end, multiplied the search.
    for op in history.iter().filter(|op| !is_unknown_read(op)) {
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    for (key, mut ops) in by_key {
        if !check_register(&ops) {
            // Report the shortest failing prefix (by call time), and only its tail: that
            // is where the history stopped making sense.
            ops.sort_by_key(|o| o.call);
            let (mut lo, mut hi) = (1, ops.len());
            while lo < hi {
                let mid = (lo + hi) / 2;
                if check_register(&ops[..mid]) {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            let from = lo.saturating_sub(40);
            return Err(Violation {
                key: key.to_string(),
                ops: ops[from..lo].to_vec(),
            });
        }
    }
    Ok(())
}

fn is_unknown_read(op: &Op) -> bool {
    op.input == Input::Get && op.output == Output::Unknown
}

/// Most configurations the search of one key may visit. Writes of unknown outcome stay
/// open to the end of the history and multiply the orders to try (far less since the
/// reductions above); past this the check stops with a failure that says so, rather than
/// running for an hour in ever more memory (a CI run once did).
const MAX_SEARCH_STATES: usize = 10_000_000;

#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
}

/// Wing–Gong–Lowe over one register's operations.
fn check_register(ops: &[Op]) -> bool {
    search(ops).0
}

/// Every value the history can see: read by a get, or expected by a compare-and-swap.
fn observed(ops: &[Op]) -> HashSet<String> {
    let mut seen = HashSet::new();
    for op in ops {
        if let Output::Value(Some(v)) = &op.output {
            seen.insert(v.clone());
        }
        if let Input::Cas {
            expected: Some(v), ..
        } = &op.input
        {
            seen.insert(v.clone());
        }
    }
    seen
}

/// The operations with every unobservable value written as one and the same value (one
/// that is not observable itself), which makes the states they lead to one state.
fn canonical(ops: &[Op]) -> Vec<Op> {
    let seen = observed(ops);
    let mut unseen = String::from("\u{0}unobserved");
    while seen.contains(&unseen) {
        unseen.push('\u{0}');
    }
    let name = |v: &String| {
        if seen.contains(v) {
            v.clone()
        } else {
            unseen.clone()
        }
    };
    ops.iter()
        .map(|op| {
            let input = match &op.input {
                Input::Put(v) => Input::Put(name(v)),
                Input::Cas { expected, new } => Input::Cas {
                    expected: expected.clone(),
                    new: name(new),
                },
                other => other.clone(),
            };
            Op {
                input,
                ..op.clone()
            }
        })
        .collect()
}

/// The search, and how many configurations it visited.
fn search(ops: &[Op]) -> (bool, usize) {
    let ops = &canonical(ops);
    // Unknown operations with the same input are one kind; each has its place in its
    // kind's call order, and may be placed only when all of its kind called before it are.
    let mut kind_of: Vec<Option<(usize, u32)>> = vec![None; ops.len()];
    let mut kinds: HashMap<&Input, Vec<usize>> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if op.ret.is_none() {
            kinds.entry(&op.input).or_default().push(i);
        }
    }
    for (k, same) in kinds.values_mut().enumerate() {
        same.sort_by_key(|&i| (ops[i].call, i));
        for (place, &i) in same.iter().enumerate() {
            kind_of[i] = Some((k, place as u32));
        }
    }
    // How many of each kind are placed.
    let mut placed = vec![0u32; kinds.len()];
    let mut known_left = ops.iter().filter(|o| o.ret.is_some()).count();
    // Events in time order; at equal times calls come first (the ops then overlap, which
    // only allows more orders — the conservative choice for a checker that must not
    // report false violations).
    let mut events: Vec<(u64, u8, Event)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        events.push((
            op.call,
            0,
            Event {
                op: i,
                is_call: true,
            },
        ));
        events.push((
            op.ret.unwrap_or(u64::MAX),
            1,
            Event {
                op: i,
                is_call: false,
            },
        ));
    }
    events.sort_by_key(|&(t, kind, e)| (t, kind, e.op));
    let n = events.len();
    // A doubly linked list over slots: 0 is the head sentinel, 1..=n the events, n + 1 the
    // tail sentinel.
    let end = n + 1;
    let mut next: Vec<usize> = (0..n + 2).map(|i| (i + 1).min(end)).collect();
    let mut prev: Vec<usize> = (0..n + 2).map(|i| i.saturating_sub(1)).collect();
    let mut ret_slot = vec![0usize; ops.len()];
    for (slot, (_, _, e)) in events.iter().enumerate() {
        if !e.is_call {
            ret_slot[e.op] = slot + 1;
        }
    }
    let event = |slot: usize| events[slot - 1].2;

    // The known operations placed, as bits.
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    // Configurations reached: for each (known operations placed, state), the counts of
    // unknown ones placed. A configuration with the same known set and state and at least
    // as many of each kind placed can do nothing the one reached could not (the kind's
    // unplaced ones were called earlier), so it is not searched again.
    let mut cache: HashMap<(Vec<u64>, State), Vec<Vec<u32>>> = HashMap::new();
    // Each configuration tries the known operations first and the unknown ones second
    // (`second`): a configuration reached with fewer unknown ones placed covers those
    // reached with more, so reaching it first saves searching them.
    let mut second = false;
    let mut visited = 0usize;
    let mut stack: Vec<(usize, State, bool)> = Vec::new();
    let mut state: State = None;
    let mut entry = next[0];

    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, slot: usize| {
        let (p, q) = (prev[slot], next[slot]);
        next[p] = q;
        prev[q] = p;
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, slot: usize| {
        let (p, q) = (prev[slot], next[slot]);
        next[p] = slot;
        prev[q] = slot;
    };

    while known_left > 0 {
        let e = event(entry);
        if e.is_call {
            let op = &ops[e.op];
            let mut moved = false;
            let kind = kind_of[e.op];
            let candidate = if kind.is_some() == second {
                step(&state, &op.input, &op.output).filter(|new_state| {
                    kind.is_none_or(|(k, place)| *new_state != state && placed[k] == place)
                })
            } else {
                None
            };
            if let Some(new_state) = candidate {
                let mut bits = linearized.clone();
                let mut counts = placed.clone();
                match kind {
                    Some((k, _)) => counts[k] += 1,
                    None => bits[e.op / 64] |= 1 << (e.op % 64),
                }
                assert!(
                    visited < MAX_SEARCH_STATES,
                    "linearizability check gave up after {MAX_SEARCH_STATES} states on one key \
                     ({} operations, {} of unknown outcome): undecided, not a violation",
                    ops.len(),
                    ops.iter().filter(|o| o.ret.is_none()).count()
                );
                let seen = cache.entry((bits.clone(), new_state.clone())).or_default();
                let covered = seen
                    .iter()
                    .any(|c| c.iter().zip(&counts).all(|(a, b)| a <= b));
                if !covered {
                    seen.retain(|c| !c.iter().zip(&counts).all(|(a, b)| b <= a));
                    seen.push(counts.clone());
                    match kind {
                        Some(_) => placed = counts,
                        None => {
                            known_left -= 1;
                            linearized = bits;
                        }
                    }
                    visited += 1;
                    stack.push((entry, state, second));
                    state = new_state;
                    second = false;
                    // Lift the call and its return out of the list.
                    unlink(&mut next, &mut prev, entry);
                    unlink(&mut next, &mut prev, ret_slot[e.op]);
                    entry = next[0];
                    moved = true;
                }
            }
            if !moved {
                entry = next[entry];
            }
        } else if !second {
            // The end of the known operations that may go next: now the unknown ones.
            second = true;
            entry = next[0];
        } else {
            // A return reached with its call still pending: backtrack.
            let Some((slot, old_state, was_second)) = stack.pop() else {
                return (false, visited);
            };
            second = was_second;
            let op = event(slot).op;
            match kind_of[op] {
                Some((k, _)) => placed[k] -= 1,
                None => {
                    known_left += 1;
                    linearized[op / 64] &= !(1 << (op % 64));
                }
            }
            state = old_state;
            relink(&mut next, &mut prev, ret_slot[op]);
            relink(&mut next, &mut prev, slot);
            entry = next[slot];
        }
    }
    (true, visited)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, input: Input, output: Output, call: u64, ret: Option<u64>) -> Op {
        Op {
            client,
            key: "k".into(),
            input,
            output,
            call,
            ret,
            note: String::new(),
        }
    }

    fn put(v: &str) -> Input {
        Input::Put(v.into())
    }

    fn got(v: Option<&str>) -> Output {
        Output::Value(v.map(str::to_string))
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![
            op(0, Input::Get, got(None), 0, Some(1)),
            op(0, put("a"), Output::Put, 2, Some(3)),
            op(1, Input::Get, got(Some("a")), 4, Some(5)),
            op(1, Input::Delete, Output::Deleted(1), 6, Some(7)),
            op(0, Input::Delete, Output::Deleted(0), 8, Some(9)),
            op(
                0,
                Input::Cas {
                    expected: None,
                    new: "b".into(),
                },
                Output::Cas(true),
                10,
                Some(11),
            ),
            op(1, Input::Get, got(Some("b")), 12, Some(13)),
        ];
        assert!(check(&h).is_ok());
    }

    #[test]
    fn stale_read_after_a_completed_write_is_caught() {
        let h = vec![
            op(0, put("a"), Output::Put, 0, Some(10)),
            op(0, put("b"), Output::Put, 20, Some(30)),
            // Starts after "b" was acknowledged, yet sees "a".
            op(1, Input::Get, got(Some("a")), 40, Some(50)),
        ];
        let err = check(&h).unwrap_err();
        assert_eq!(err.key, "k");
        assert!(err.to_string().contains("no linearization"));
    }

    #[test]
    fn concurrent_reads_may_see_either_side_of_a_write() {
        let h = vec![
            op(0, put("a"), Output::Put, 0, Some(5)),
            op(0, put("b"), Output::Put, 10, Some(100)),
            op(1, Input::Get, got(Some("b")), 20, Some(30)),
            op(2, Input::Get, got(Some("a")), 15, Some(40)),
        ];
        assert!(check(&h).is_ok());
        // But once a read saw "b", a later read (after it returned) cannot see "a".
        let mut bad = h.clone();
        bad.push(op(2, Input::Get, got(Some("a")), 50, Some(60)));
        assert!(check(&bad).is_err());
    }

    #[test]
    fn lost_acknowledged_write_is_caught() {
        let h = vec![
            op(0, put("a"), Output::Put, 0, Some(10)),
            op(1, Input::Get, got(None), 20, Some(30)),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn reads_of_unknown_outcome_are_left_out() {
        // 200 reads that never answered, all open to the end: the search would have to
        // place each one; left out, the check is quick and still finds the stale read.
        let mut ops = vec![op(0, put("a"), Output::Put, 0, Some(10))];
        for i in 0..200u64 {
            ops.push(op(
                1 + i as usize,
                Input::Get,
                Output::Unknown,
                20 + i,
                None,
            ));
        }
        ops.push(op(999, Input::Get, got(None), 500, Some(510)));
        assert!(check(&ops).is_err());
        ops.pop();
        assert!(check(&ops).is_ok());
    }

    #[test]
    fn unknown_write_may_apply_late_or_never() {
        let never = vec![
            op(0, put("a"), Output::Unknown, 0, None),
            op(1, Input::Get, got(None), 10, Some(20)),
            op(1, Input::Get, got(None), 30, Some(40)),
        ];
        assert!(check(&never).is_ok());
        let late = vec![
            op(0, put("a"), Output::Unknown, 0, None),
            op(1, Input::Get, got(None), 10, Some(20)),
            op(1, Input::Get, got(Some("a")), 30, Some(40)),
        ];
        assert!(check(&late).is_ok());
        // Visible, then gone again without any delete: impossible.
        let flicker = vec![
            op(0, put("a"), Output::Unknown, 0, None),
            op(1, Input::Get, got(Some("a")), 10, Some(20)),
            op(1, Input::Get, got(None), 30, Some(40)),
        ];
        assert!(check(&flicker).is_err());
        // An unknown write cannot take effect before it was sent.
        let early = vec![
            op(1, Input::Get, got(Some("a")), 0, Some(5)),
            op(0, put("a"), Output::Unknown, 10, None),
        ];
        assert!(check(&early).is_err());
    }

    #[test]
    fn compare_and_swap_outcomes_must_match_the_state() {
        let cas = |expected: Option<&str>, new: &str| Input::Cas {
            expected: expected.map(str::to_string),
            new: new.into(),
        };
        // Two clients race a CAS from "a": exactly one may win.
        let both_won = vec![
            op(0, put("a"), Output::Put, 0, Some(1)),
            op(1, cas(Some("a"), "b"), Output::Cas(true), 10, Some(20)),
            op(2, cas(Some("a"), "c"), Output::Cas(true), 10, Some(20)),
        ];
        assert!(check(&both_won).is_err());
        let one_won = vec![
            op(0, put("a"), Output::Put, 0, Some(1)),
            op(1, cas(Some("a"), "b"), Output::Cas(true), 10, Some(20)),
            op(2, cas(Some("a"), "c"), Output::Cas(false), 10, Some(20)),
            op(0, Input::Get, got(Some("b")), 30, Some(40)),
        ];
        assert!(check(&one_won).is_ok());
        // A failed CAS on a state that matched is wrong.
        let wrong_fail = vec![
            op(0, put("a"), Output::Put, 0, Some(1)),
            op(1, cas(Some("a"), "b"), Output::Cas(false), 10, Some(20)),
        ];
        assert!(check(&wrong_fail).is_err());
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut h = vec![
            op(0, put("a"), Output::Put, 0, Some(10)),
            op(1, Input::Get, got(Some("a")), 20, Some(30)),
        ];
        let mut other = op(2, Input::Get, got(None), 20, Some(30));
        other.key = "other".into();
        h.push(other);
        assert!(check(&h).is_ok());
    }

    #[test]
    fn many_concurrent_operations_finish_quickly() {
        // 8 clients, 400 overlapping ops on one key: the memoised search stays small.
        let mut h = Vec::new();
        let mut t = 0;
        let mut value: Option<String> = None;
        for i in 0..400u64 {
            let client = (i % 8) as usize;
            if i % 3 == 0 {
                let v = format!("v{i}");
                h.push(op(client, put(&v), Output::Put, t, Some(t + 25)));
                value = Some(v);
            } else {
                h.push(op(
                    client,
                    Input::Get,
                    Output::Value(value.clone()),
                    t + 26,
                    Some(t + 40),
                ));
            }
            t += 30;
        }
        let (ok, states) = search(&h);
        assert!(ok);
        assert!(states < 100_000, "{states} states");
    }

    /// The definition, by brute force: some order of a subset of the unknown operations
    /// plus all known ones, respecting real time, that the register accepts.
    fn brute_force(ops: &[Op]) -> bool {
        fn go(ops: &[Op], done: &mut Vec<bool>, state: &State) -> bool {
            let pending: Vec<usize> = (0..ops.len()).filter(|&i| !done[i]).collect();
            if pending.iter().all(|&i| ops[i].ret.is_none()) {
                return true; // the rest never happen
            }
            for &i in &pending {
                // i may go next only if no pending op returned before i was called.
                let blocked = pending
                    .iter()
                    .any(|&j| j != i && ops[j].ret.is_some_and(|r| r < ops[i].call));
                if blocked {
                    continue;
                }
                if let Some(next) = step(state, &ops[i].input, &ops[i].output) {
                    done[i] = true;
                    if go(ops, done, &next) {
                        return true;
                    }
                    done[i] = false;
                }
            }
            false
        }
        go(ops, &mut vec![false; ops.len()], &None)
    }

    struct Rng(rand::rngs::SmallRng);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            use rand::RngExt;
            self.0.random_range(0..n)
        }
    }

    /// Random histories of `1..=max_ops` operations, each of unknown outcome with
    /// probability 1 / `unknown_one_in`. Reads and expectations use "a", "b", "c"; writes
    /// also "x" and "y", which nothing reads (the unobservable values).
    fn agrees_with_brute_force(seed: u64, max_ops: u64, unknown_one_in: u64) {
        let mut rng = Rng(<rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(
            seed,
        ));
        let (mut yes, mut no) = (0, 0);
        for _ in 0..20_000 {
            let n = 1 + rng.below(max_ops) as usize;
            let values = ["a", "b", "c", "x", "y"];
            let ops: Vec<Op> = (0..n)
                .map(|c| {
                    let call = rng.below(20);
                    let ret = (rng.below(unknown_one_in) != 0).then(|| call + 1 + rng.below(10));
                    let (input, output) = match rng.below(4) {
                        0 => {
                            let out = match rng.below(4) {
                                0 => None,
                                _ => Some(values[rng.below(3) as usize].to_string()),
                            };
                            (Input::Get, Output::Value(out))
                        }
                        1 => (
                            Input::Put(values[rng.below(5) as usize].to_string()),
                            Output::Put,
                        ),
                        2 => (Input::Delete, Output::Deleted(rng.below(2) as i64)),
                        _ => {
                            let expected = (rng.below(3) != 0)
                                .then(|| values[rng.below(3) as usize].to_string());
                            let new = values[rng.below(5) as usize].to_string();
                            (Input::Cas { expected, new }, Output::Cas(rng.below(2) == 0))
                        }
                    };
                    let output = if ret.is_none() {
                        Output::Unknown
                    } else {
                        output
                    };
                    op(c, input, output, call, ret)
                })
                .collect();
            let expected = brute_force(&ops);
            assert_eq!(check_register(&ops), expected, "{ops:#?}");
            if expected { yes += 1 } else { no += 1 }
        }
        assert!(
            yes > 1000 && no > 1000,
            "both outcomes exercised: {yes} / {no}"
        );
    }

    #[test]
    fn agrees_with_brute_force_on_random_small_histories() {
        agrees_with_brute_force(0x2545_F491_4F6C_DD1D, 7, 6);
    }

    #[test]
    fn agrees_with_brute_force_when_half_the_outcomes_are_unknown() {
        // The reductions for unknown operations (one unobservable value, no placing where
        // nothing changes, same inputs in call order) must not change a single verdict.
        agrees_with_brute_force(0x9E37_79B9_7F4A_7C15, 8, 2);
    }

    #[test]
    fn an_unknown_write_that_nobody_read_can_still_explain_a_delete() {
        // "x" is never read, yet its put is the only way the key can exist for the delete.
        let h = vec![
            op(0, put("x"), Output::Unknown, 0, None),
            op(1, Input::Delete, Output::Deleted(1), 10, Some(20)),
            op(1, Input::Get, got(None), 30, Some(40)),
        ];
        assert!(check(&h).is_ok());
        // ... but not two deletes of an existing key with one put between nothing.
        let mut twice = h.clone();
        twice.push(op(1, Input::Delete, Output::Deleted(1), 50, Some(60)));
        assert!(check(&twice).is_err());
    }

    /// The shape of the CI run that gave up: dozens of writes that timed out during faults,
    /// all open to the end, among hundreds of answered operations on the same key.
    fn many_unknown_writes(unknown: u64) -> Vec<Op> {
        let mut h = Vec::new();
        let mut t = 0;
        let mut value: Option<String> = None;
        let mut sent = 0;
        for i in 0..240u64 {
            // Every fifth step, one more write that times out (a put, a compare-and-swap
            // from the value last read, or a delete), open to the end.
            if i % 5 == 0 && sent < unknown {
                let input = match sent % 4 {
                    0 => Input::Delete,
                    1 => Input::Cas {
                        expected: value.clone(),
                        new: format!("u{i}"),
                    },
                    _ => put(&format!("u{i}")),
                };
                h.push(op(1 + sent as usize % 6, input, Output::Unknown, t, None));
                sent += 1;
            }
            // And answered operations, one at a time, that never see an unknown write.
            if i % 3 == 0 {
                let v = format!("v{i}");
                h.push(op(0, put(&v), Output::Put, t + 1, Some(t + 5)));
                value = Some(v);
            } else {
                h.push(op(
                    0,
                    Input::Get,
                    Output::Value(value.clone()),
                    t + 1,
                    Some(t + 5),
                ));
            }
            t += 10;
        }
        h
    }

    #[test]
    fn dozens_of_unknown_writes_stay_cheap() {
        // 40 unknown writes: without the reductions the search could visit a configuration
        // for every subset of them called by each point; with them, about a thousand, and
        // about as many to prove the stale read below has no linearization.
        let h = many_unknown_writes(40);
        let (ok, states) = search(&h);
        assert!(ok);
        assert!(states < 100_000, "{states} states");
        // And one stale read among them is still found.
        let mut bad = h.clone();
        let end = bad.iter().filter_map(|o| o.ret).max().unwrap();
        bad.push(op(0, Input::Get, got(Some("v3")), end + 10, Some(end + 20)));
        let (ok, states) = search(&bad);
        assert!(!ok);
        assert!(states < 100_000, "{states} states");
        assert!(check(&bad).is_err());
    }
}
