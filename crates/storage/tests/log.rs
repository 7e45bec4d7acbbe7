//! The Raft log: durability across reopen, truncate, purge, torn and damaged tails, and a
//! writer killed with SIGKILL in the middle of appending.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Sender, channel};

use raftkv_storage::log::{FlushCallback, LogConfig, LogId, RaftLogStore};

fn id(term: u64, index: u64) -> LogId {
    LogId { term, index }
}

fn payload(index: u64) -> Vec<u8> {
    format!("entry-{index}-{}", "x".repeat((index % 50) as usize)).into_bytes()
}

fn entries(term: u64, from: u64, to: u64) -> Vec<(LogId, Vec<u8>)> {
    (from..to).map(|i| (id(term, i), payload(i))).collect()
}

fn open(dir: &Path) -> std::io::Result<RaftLogStore> {
    RaftLogStore::open(dir, &LogConfig::default())
}

/// Appends entries 1..=`last` of term 1 one call each, as fast as it can; each callback
/// sends its index and whether the flush succeeded.
fn append_one_by_one(log: &RaftLogStore, last: u64, tx: &Sender<(u64, bool)>) {
    for i in 1..=last {
        let tx = tx.clone();
        log.append(
            entries(1, i, i + 1),
            FlushCallback::new(move |r| tx.send((i, r.is_ok())).unwrap()),
        )
        .unwrap();
    }
}

/// The segment files of a log directory, oldest first.
fn chunks(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

/// Where the written records of a segment file end: segments are allocated at their full
/// size, and what follows the last record reads as zeros.
fn data_end(path: &Path) -> u64 {
    let bytes = fs::read(path).unwrap();
    bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1) as u64
}

#[test]
fn appends_and_vote_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path()).unwrap();
        log.save_vote(b"term 3 for node 2".to_vec()).unwrap();
        log.append_sync(entries(1, 1, 101)).unwrap();
    }
    let log = open(dir.path()).unwrap();
    assert_eq!(log.vote().as_deref(), Some(&b"term 3 for node 2"[..]));
    assert_eq!(log.state().last, Some(id(1, 100)));
    assert_eq!(log.read(1, 101).unwrap(), entries(1, 1, 101));
    assert_eq!(log.read(40, 43).unwrap(), entries(1, 40, 43));
}

#[test]
fn concurrent_flush_requests_all_complete() {
    // Many appends in flight at once: each callback fires once, after its data is synced.
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).unwrap();
    let (tx, rx) = channel();
    append_one_by_one(&log, 500, &tx);
    drop(tx);
    let mut done: Vec<u64> = rx
        .iter()
        .map(|(i, ok)| {
            assert!(ok);
            i
        })
        .collect();
    done.sort();
    assert_eq!(done, (1..=500).collect::<Vec<_>>());
}

#[test]
fn save_vote_returns_only_after_every_earlier_append_is_flushed() {
    // The raft crate relies on this FIFO order: `append` returns before its fdatasync, and a
    // new leader's progress update waits only for the candidate's vote to be saved.
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).unwrap();
    let flushed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for round in 0..50u64 {
        for i in 1..=20u64 {
            let index = round * 20 + i;
            let flushed = flushed.clone();
            log.append(
                entries(1, index, index + 1),
                FlushCallback::new(move |r| {
                    assert!(r.is_ok());
                    flushed.fetch_max(index, std::sync::atomic::Ordering::SeqCst);
                }),
            )
            .unwrap();
        }
        log.save_vote(format!("vote {round}").into_bytes()).unwrap();
        assert_eq!(
            flushed.load(std::sync::atomic::Ordering::SeqCst),
            round * 20 + 20,
            "save_vote returned before an earlier append was flushed"
        );
    }
}

#[test]
fn truncate_drops_a_conflicting_suffix() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path()).unwrap();
        log.append_sync(entries(1, 1, 11)).unwrap();
        log.truncate_from(6).unwrap();
        assert_eq!(log.state().last, Some(id(1, 5)));
        // A new leader's entries replace the old suffix.
        log.append_sync(entries(2, 6, 9)).unwrap();
    }
    let log = open(dir.path()).unwrap();
    assert_eq!(log.state().last, Some(id(2, 8)));
    let mut expected = entries(1, 1, 6);
    expected.extend(entries(2, 6, 9));
    assert_eq!(log.read(1, 100).unwrap(), expected);
}

#[test]
fn purge_drops_a_prefix_and_unlinks_whole_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let small_chunks = LogConfig {
        chunk_bytes: 4096,
        ..LogConfig::default()
    };
    {
        let log = RaftLogStore::open(dir.path(), &small_chunks).unwrap();
        log.append_sync(entries(1, 1, 1001)).unwrap();
        let before = chunks(dir.path()).len();
        assert!(before > 5, "{before} chunks");
        log.purge_upto(id(1, 900)).unwrap();
        // One more synced write lets the worker unlink behind the purge record.
        log.append_sync(entries(1, 1001, 1002)).unwrap();
        assert!(chunks(dir.path()).len() < before);
        assert_eq!(log.state().purged, Some(id(1, 900)));
        assert!(log.read(1, 900).unwrap().is_empty());
    }
    let log = RaftLogStore::open(dir.path(), &small_chunks).unwrap();
    assert_eq!(log.state().purged, Some(id(1, 900)));
    assert_eq!(log.read(901, 1002).unwrap(), entries(1, 901, 1002));
}

#[test]
fn torn_tail_is_cut_after_the_last_good_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path()).unwrap();
        log.append_sync(entries(1, 1, 21)).unwrap();
    }
    // Tear the last record: the file ends 5 bytes before it does, as when a crash cut
    // short a write that was growing the file.
    let last = chunks(dir.path()).pop().unwrap();
    let len = data_end(&last);
    OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let log = open(dir.path()).unwrap();
    assert_eq!(log.state().last, Some(id(1, 19)));
    assert_eq!(log.read(1, 21).unwrap(), entries(1, 1, 20));
    // And the log goes on from there.
    log.append_sync(entries(1, 20, 22)).unwrap();
    drop(log);
    assert_eq!(
        open(dir.path()).unwrap().read(1, 30).unwrap(),
        entries(1, 1, 22)
    );
}

#[test]
fn a_record_torn_at_a_sector_boundary_is_cut_and_a_partly_zeroed_one_refused() {
    // A crash can leave a sector of a record unwritten (zeros in a preallocated file): the
    // record is incomplete, not damaged. Zeros that do not fill a sector cannot come from a
    // torn write, so they are damage.
    let dir = tempfile::tempdir().unwrap();
    let big = vec![b'b'; 2000];
    {
        let log = open(dir.path()).unwrap();
        log.append_sync(entries(1, 1, 20)).unwrap();
        log.append_sync([(id(1, 20), big.clone())]).unwrap();
    }
    let last = chunks(dir.path()).pop().unwrap();
    let clean = fs::read(&last).unwrap();
    let end = data_end(&last) as usize;
    let payload_at = end - big.len();
    let boundary = payload_at.div_ceil(512) * 512 + 512;
    assert!(boundary < end);

    let mut torn = clean.clone();
    torn[boundary..end].fill(0);
    fs::write(&last, &torn).unwrap();
    {
        let log = open(dir.path()).unwrap();
        assert_eq!(log.state().last, Some(id(1, 19)));
        assert_eq!(log.read(1, 30).unwrap(), entries(1, 1, 20));
    }
    // The cut record's bytes are gone for good: a later append takes its place.
    assert!(
        fs::read(&last).unwrap()[boundary..end]
            .iter()
            .all(|&b| b == 0)
    );

    let mut damaged = clean.clone();
    damaged[boundary + 10..boundary + 100].fill(0);
    fs::write(&last, &damaged).unwrap();
    assert!(open(dir.path()).is_err());
    fs::write(&last, &clean).unwrap();
    let log = open(dir.path()).unwrap();
    assert_eq!(log.state().last, Some(id(1, 20)));
    assert_eq!(log.read(20, 21).unwrap(), vec![(id(1, 20), big)]);
}

#[test]
fn zero_filled_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path()).unwrap();
        log.append_sync(entries(1, 1, 11)).unwrap();
    }
    let last = chunks(dir.path()).pop().unwrap();
    OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap()
        .write_all(&[0; 300])
        .unwrap();
    let log = open(dir.path()).unwrap();
    assert_eq!(log.read(1, 20).unwrap(), entries(1, 1, 11));
}

#[test]
fn bit_flips_are_refused_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path()).unwrap();
        log.append_sync(entries(1, 1, 51)).unwrap();
    }
    let last = chunks(dir.path()).pop().unwrap();
    let clean = fs::read(&last).unwrap();
    let end = data_end(&last) as usize;
    // A flip in the middle of the log and one in the last record: both are detected by the
    // record checksums and refused — an acknowledged entry is never silently dropped.
    for at in [end / 2, end - 3] {
        let mut damaged = clean.clone();
        damaged[at] ^= 0x10;
        fs::write(&last, &damaged).unwrap();
        let err = open(dir.path())
            .err()
            .unwrap_or_else(|| panic!("flip at {at} accepted"));
        assert!(!err.to_string().is_empty());
    }
    fs::write(&last, &clean).unwrap();
    assert_eq!(
        open(dir.path()).unwrap().read(1, 51).unwrap(),
        entries(1, 1, 51)
    );
}

#[test]
fn huge_length_field_is_refused_without_allocating_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path()).unwrap();
        log.append_sync(entries(1, 1, 4)).unwrap();
    }
    let last = chunks(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&last).unwrap();
    // Find entry 2's payload and overwrite its 4-byte length with 0xffffffff.
    let needle = payload(2);
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    bytes[at - 4..at].copy_from_slice(&[0xff; 4]);
    fs::write(&last, &bytes).unwrap();
    assert!(open(dir.path()).is_err());
}

/// Environment variable that turns `crash_child` into the writer process.
const CHILD_DIR: &str = "RAFTKV_LOG_CRASH_CHILD_DIR";

/// The child side of `sigkill_mid_append_loses_no_flushed_entry`: appends forever, many
/// appends in flight, and prints the index of each one whose flush callback reported
/// success. Does nothing when run as an ordinary test.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let log = open(Path::new(&dir)).unwrap();
    let (tx, rx) = channel::<u64>();
    std::thread::spawn(move || {
        let stdout = std::io::stdout();
        for index in rx {
            let mut out = stdout.lock();
            writeln!(out, "flushed {index}").unwrap();
            out.flush().unwrap();
        }
    });
    for i in 1.. {
        let tx = tx.clone();
        log.append(
            entries(1, i, i + 1),
            FlushCallback::new(move |r| {
                if r.is_ok() {
                    let _ = tx.send(i);
                }
            }),
        )
        .unwrap();
        if i % 64 == 0 {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
}

#[test]
fn sigkill_mid_append_loses_no_flushed_entry() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut flushed = Vec::new();
        while flushed.len() < 300 + round * 100 {
            let line = lines.next().expect("child exited early").unwrap();
            if let Some(i) = line.strip_prefix("flushed ") {
                flushed.push(i.parse::<u64>().unwrap());
            }
        }
        child.kill().unwrap(); // SIGKILL, while appends are still in flight
        child.wait().unwrap();
        let log = open(dir.path()).unwrap();
        let last = log.state().last.unwrap().index;
        let max_flushed = *flushed.iter().max().unwrap();
        assert!(last >= max_flushed, "last {last} < flushed {max_flushed}");
        let held = log.read(1, last + 1).unwrap();
        for i in flushed {
            assert_eq!(held[(i - 1) as usize], (id(1, i), payload(i)), "entry {i}");
        }
        // Start the next round's writer on a fresh log.
        drop(log);
        fs::remove_dir_all(dir.path()).unwrap();
        fs::create_dir_all(dir.path()).unwrap();
    }
}

#[test]
fn appends_in_quick_succession_share_fdatasyncs_and_complete_in_order() {
    // Adaptive group commit: appends arriving faster than a flush takes are held back and
    // share one fdatasync; callbacks still run once each, in append order, after the
    // data is durable (checked by reopening).
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = channel();
    let syncs = {
        let log = open(dir.path()).unwrap();
        let before = log.flush_stats().syncs;
        append_one_by_one(&log, 500, &tx);
        drop(tx);
        let done: Vec<(u64, bool)> = rx.iter().collect();
        assert_eq!(done, (1..=500).map(|i| (i, true)).collect::<Vec<_>>());
        log.flush_stats().syncs - before
    };
    assert!(
        syncs <= 250,
        "{syncs} fdatasyncs for 500 appends made back to back"
    );
    let log = open(dir.path()).unwrap();
    assert_eq!(log.read(1, 501).unwrap(), entries(1, 1, 501));
}

#[test]
fn a_vote_saved_after_held_back_appends_completes_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).unwrap();
    let (tx, rx) = channel();
    append_one_by_one(&log, 200, &tx);
    log.save_vote(b"vote".to_vec()).unwrap();
    tx.send((0, true)).unwrap(); // the vote is saved
    drop(tx);
    let seen: Vec<_> = rx.iter().collect();
    let mut want: Vec<_> = (1..=200).map(|i| (i, true)).collect();
    want.push((0, true));
    assert_eq!(
        seen, want,
        "every append's callback ran before save_vote returned"
    );
}

fn small_segments() -> LogConfig {
    LogConfig {
        chunk_bytes: 4096,
        ..LogConfig::default()
    }
}

#[test]
fn the_vote_and_purge_point_outlive_the_segments_they_were_written_in() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = RaftLogStore::open(dir.path(), &small_segments()).unwrap();
        log.save_vote(b"vote of term 1".to_vec()).unwrap();
        log.append_sync(entries(1, 1, 600)).unwrap();
        log.purge_upto(id(1, 550)).unwrap();
        log.append_sync(entries(1, 600, 1200)).unwrap();
        log.purge_upto(id(1, 1100)).unwrap();
        // Every segment that held the vote record or the first purge record is gone.
        assert!(chunks(dir.path()).len() <= 3, "{:?}", chunks(dir.path()));
    }
    let log = RaftLogStore::open(dir.path(), &small_segments()).unwrap();
    assert_eq!(log.vote(), Some(b"vote of term 1".to_vec()));
    assert_eq!(log.state().purged, Some(id(1, 1100)));
    assert_eq!(log.state().last, Some(id(1, 1199)));
    assert_eq!(log.read(0, 2000).unwrap(), entries(1, 1101, 1200));
}

#[test]
fn a_truncate_reaching_into_older_segments_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = RaftLogStore::open(dir.path(), &small_segments()).unwrap();
        log.append_sync(entries(1, 1, 300)).unwrap();
        log.truncate_from(120).unwrap();
        log.append_sync(entries(2, 120, 130)).unwrap();
    }
    let log = RaftLogStore::open(dir.path(), &small_segments()).unwrap();
    let mut want = entries(1, 1, 120);
    want.extend(entries(2, 120, 130));
    assert_eq!(log.read(0, 1000).unwrap(), want);
    assert_eq!(log.state().last, Some(id(2, 129)));
}

#[test]
fn a_purge_past_the_last_entry_moves_the_log_on() {
    // After a snapshot install the log is purged beyond its last entry; the next entry
    // follows the purge point.
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path()).unwrap();
        log.append_sync(entries(1, 1, 10)).unwrap();
        log.purge_upto(id(3, 500)).unwrap();
        assert_eq!(log.state().last, Some(id(3, 500)));
        assert!(log.append_sync(entries(3, 10, 11)).is_err());
        log.append_sync(entries(3, 501, 503)).unwrap();
    }
    let log = open(dir.path()).unwrap();
    assert_eq!(log.state().purged, Some(id(3, 500)));
    assert_eq!(log.read(0, 1000).unwrap(), entries(3, 501, 503));
}

#[test]
fn an_append_that_leaves_a_gap_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).unwrap();
    log.append_sync(entries(1, 1, 5)).unwrap();
    let mut bad = entries(1, 5, 7);
    bad.extend(entries(1, 8, 9));
    assert!(log.append_sync(bad).is_err());
    assert_eq!(log.state().last, Some(id(1, 4)));
    log.append_sync(entries(1, 5, 6)).unwrap();
    drop(log);
    assert_eq!(
        open(dir.path()).unwrap().read(0, 100).unwrap(),
        entries(1, 1, 6)
    );
}

#[test]
fn missing_segments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = RaftLogStore::open(dir.path(), &small_segments()).unwrap();
        log.append_sync(entries(1, 1, 400)).unwrap();
    }
    let files = chunks(dir.path());
    assert!(files.len() >= 4);
    let saved = fs::read(&files[1]).unwrap();
    // A hole in the numbering.
    fs::remove_file(&files[1]).unwrap();
    assert!(RaftLogStore::open(dir.path(), &small_segments()).is_err());
    fs::write(&files[1], &saved).unwrap();
    // The oldest segment gone while its entries were never purged.
    fs::remove_file(&files[0]).unwrap();
    let err = RaftLogStore::open(dir.path(), &small_segments())
        .err()
        .expect("a log missing unpurged entries opens");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn a_new_segment_that_never_reached_the_disk_is_begun_again() {
    // A crash right after a segment file was created and allocated, before its first
    // record was written: it reads as zeros.
    let dir = tempfile::tempdir().unwrap();
    {
        let log = RaftLogStore::open(dir.path(), &small_segments()).unwrap();
        log.save_vote(b"v".to_vec()).unwrap();
        log.append_sync(entries(1, 1, 200)).unwrap();
    }
    let files = chunks(dir.path());
    let newest = files.last().unwrap();
    let name = newest.file_name().unwrap().to_str().unwrap();
    let seq = u64::from_str_radix(&name[4..20], 16).unwrap();
    let next = dir.path().join(format!("seg-{:016x}.wal", seq + 1));
    fs::write(&next, vec![0u8; 4096]).unwrap();
    {
        let log = RaftLogStore::open(dir.path(), &small_segments()).unwrap();
        assert_eq!(log.read(0, 1000).unwrap(), entries(1, 1, 200));
        log.append_sync(entries(1, 200, 210)).unwrap();
    }
    let log = RaftLogStore::open(dir.path(), &small_segments()).unwrap();
    assert_eq!(log.read(0, 1000).unwrap(), entries(1, 1, 210));
    assert_eq!(log.vote(), Some(b"v".to_vec()));
}

#[test]
fn a_log_open_in_one_place_cannot_be_opened_in_another() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).unwrap();
    let err = open(dir.path())
        .err()
        .expect("a second open of the same log");
    assert!(err.to_string().contains("in use"), "{err}");
    drop(log);
    open(dir.path()).unwrap();
}

#[test]
fn records_a_torn_write_left_past_a_zeroed_header_are_never_read_again() {
    // A crash can persist a later sector of a write and not the one holding a record's
    // header: recovery stops at the zero header. The stale bytes after it must not turn up
    // behind the records written after recovery.
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path()).unwrap();
        log.append_sync(entries(1, 1, 10)).unwrap();
    }
    let last = chunks(dir.path()).pop().unwrap();
    let end = data_end(&last) as usize;
    // Entries 10 and 11 as a torn write left them: 10's record zeroed, 11's intact.
    let scratch = tempfile::tempdir().unwrap();
    {
        let log = open(scratch.path()).unwrap();
        log.append_sync(entries(1, 1, 12)).unwrap();
    }
    let full = fs::read(chunks(scratch.path()).pop().unwrap()).unwrap();
    let full_end = data_end(&chunks(scratch.path()).pop().unwrap()) as usize;
    let mut bytes = fs::read(&last).unwrap();
    let eleven = full_end - payload(11).len() - 8 - 17;
    bytes[eleven..full_end].copy_from_slice(&full[eleven..full_end]);
    assert!(bytes[end..eleven].iter().all(|&b| b == 0));
    fs::write(&last, &bytes).unwrap();
    {
        let log = open(dir.path()).unwrap();
        assert_eq!(log.state().last, Some(id(1, 9)));
        // Entry 10 again, of the same length as the lost one: it ends where the stale
        // entry 11 began.
        log.append_sync(entries(2, 10, 11)).unwrap();
    }
    let log = open(dir.path()).unwrap();
    assert_eq!(log.state().last, Some(id(2, 10)));
}

#[test]
fn damage_in_a_record_ending_in_zero_bytes_is_refused_not_taken_for_a_tear() {
    // Entry 6 ends with five zero bytes, the first five of a sector, and entry 7 follows
    // in that sector. A flip inside entry 6 is damage: the sector it ends in is not all
    // zeros (entry 7 is there), so the record is no torn write, and entry 7, which was
    // acknowledged, must not be cut off with it.
    let dir = tempfile::tempdir().unwrap();
    let last;
    {
        let log = open(dir.path()).unwrap();
        log.append_sync(entries(1, 1, 6)).unwrap();
        last = chunks(dir.path()).pop().unwrap();
        let end0 = data_end(&last) as usize;
        let mut target = (end0 + 25).div_ceil(512) * 512 + 5;
        if target - (end0 + 25) < 16 {
            target += 512;
        }
        let mut six = vec![b'p'; target - (end0 + 25) - 5];
        six.extend_from_slice(&[0; 5]);
        log.append_sync([(id(1, 6), six)]).unwrap();
        assert_eq!(data_end(&last) as usize, target - 5);
        log.append_sync(entries(1, 7, 8)).unwrap();
    }
    let mut bytes = fs::read(&last).unwrap();
    let six_at = bytes.windows(4).position(|w| w == b"pppp").unwrap();
    bytes[six_at + 1] ^= 0x01;
    fs::write(&last, &bytes).unwrap();
    assert!(open(dir.path()).is_err());
}
