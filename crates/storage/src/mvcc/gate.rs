//! The compaction gate: compaction's physical deletes (and a restore's swap of the whole
//! tree) wait while anyone reads the store at a fixed older point — a snapshot being written,
//! a hash being taken.
//!
//! A read pin is owned and `Send`, unlike a `std::sync::RwLock` guard: a Raft snapshot's
//! point is pinned on the state machine's task, between two applies, and written out later on
//! another thread while applies go on.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct State {
    readers: usize,
    writing: bool,
}

/// The gate (shared by the store and the pins it hands out).
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: Mutex<State>,
    changed: Condvar,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A read pin: waits while a writer is in, then keeps writers out until dropped.
    pub(crate) fn pin(self: &Arc<Self>) -> CompactionPin {
        let mut state = self.lock();
        while state.writing {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.readers += 1;
        CompactionPin { gate: self.clone() }
    }

    /// The write side: waits until no pin and no other writer is left.
    pub(crate) fn write(&self) -> GateWrite<'_> {
        let mut state = self.lock();
        while state.writing || state.readers > 0 {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.writing = true;
        GateWrite { gate: self }
    }

    /// The write side if it is free now (no pin, no other writer), else `None`.
    pub(crate) fn try_write(&self) -> Option<GateWrite<'_>> {
        let mut state = self.lock();
        if state.writing || state.readers > 0 {
            return None;
        }
        state.writing = true;
        Some(GateWrite { gate: self })
    }

    /// Waits, at most `timeout`, until no pin and no writer is in (without taking the gate:
    /// a writer that must not wait with other locks held tries again then).
    pub(crate) fn wait_unpinned(&self, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        let mut state = self.lock();
        while state.writing || state.readers > 0 {
            let now = std::time::Instant::now();
            if now >= deadline {
                return;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Holds off compaction's physical deletes and restores while alive (see the module doc).
#[derive(Debug)]
pub struct CompactionPin {
    gate: Arc<Gate>,
}

impl Drop for CompactionPin {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.readers -= 1;
        drop(state);
        self.gate.changed.notify_all();
    }
}

/// The gate held for writing.
#[derive(Debug)]
pub(crate) struct GateWrite<'a> {
    gate: &'a Gate,
}

impl Drop for GateWrite<'_> {
    fn drop(&mut self) {
        self.gate.lock().writing = false;
        self.gate.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn a_writer_waits_for_every_pin_even_one_moved_to_another_thread() {
        let gate = Arc::new(Gate::default());
        let pin = gate.pin();
        let second = gate.pin();
        let wrote = Arc::new(AtomicBool::new(false));
        let writer = {
            let (gate, wrote) = (gate.clone(), wrote.clone());
            std::thread::spawn(move || {
                let _w = gate.write();
                wrote.store(true, Ordering::SeqCst);
            })
        };
        // The pin goes to another thread and is dropped there.
        std::thread::spawn(move || drop(pin)).join().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(!wrote.load(Ordering::SeqCst), "wrote past a live pin");
        drop(second);
        writer.join().unwrap();
        assert!(wrote.load(Ordering::SeqCst));
        // Released: a new pin and a new writer both get in.
        drop(gate.pin());
        drop(gate.write());
    }

    #[test]
    fn a_pin_waits_for_a_writer_inside() {
        let gate = Arc::new(Gate::default());
        let w = gate.write();
        let pinned = Arc::new(AtomicBool::new(false));
        let reader = {
            let (gate, pinned) = (gate.clone(), pinned.clone());
            std::thread::spawn(move || {
                let _p = gate.pin();
                pinned.store(true, Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !pinned.load(Ordering::SeqCst),
            "pinned while a writer was in"
        );
        drop(w);
        reader.join().unwrap();
        assert!(pinned.load(Ordering::SeqCst));
    }
}
