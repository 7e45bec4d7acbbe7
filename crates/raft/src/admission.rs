//! What a peer message must satisfy before openraft sees it.
//!
//! openraft trusts its peers: a vote with term 2^64-1 overflows the next election's term
//! (a panic, persisted with the vote, so the member failed again after every restart); a
//! committed vote naming the receiver makes it a leader without an election; entries that
//! do not follow each other, a commit point that contradicts the entries, or a snapshot
//! newer than the sender's term trip assertions or silently corrupt the log. The peer port
//! is meant for a private network (or TLS, a later issue), but no message may stop a
//! member: every request the peer service hands to openraft — and every answer the network
//! hands back to it — passes these checks first, and a message that fails them is refused
//! with `InvalidArgument`, changing nothing.
//!
//! The checks are about shape, not trust: a peer that lies within them can still disrupt
//! elections, as in any Raft. They never refuse a message a correct member sends.

use std::collections::BTreeSet;

use openraft::EntryPayload;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, VoteRequest, VoteResponse,
};

use crate::types::{Entry, LogId, SnapshotMeta, StoredMembership, TypeConfig, Vote};

/// No real cluster reaches these: every `+ 1` openraft does on a term or index stays far
/// from overflow.
pub const MAX_TERM: u64 = 1 << 62;
/// See [`MAX_TERM`].
pub const MAX_INDEX: u64 = 1 << 62;

/// Why a peer message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("raftkv: refused peer message: {0}")]
pub struct Refused(pub &'static str);

impl From<Refused> for tonic::Status {
    fn from(r: Refused) -> Self {
        tonic::Status::invalid_argument(r.to_string())
    }
}

fn check(ok: bool, why: &'static str) -> Result<(), Refused> {
    if ok { Ok(()) } else { Err(Refused(why)) }
}

fn vote_in_bounds(vote: &Vote) -> Result<(), Refused> {
    check(vote.leader_id.term <= MAX_TERM, "term out of range")
}

/// A vote as a peer sends it: in bounds, not naming this member (no correct peer speaks for
/// us), committed as its message type requires.
fn peer_vote(vote: &Vote, me: u64, committed: bool) -> Result<(), Refused> {
    vote_in_bounds(vote)?;
    check(vote.leader_id.voted_for != me, "vote names the receiver")?;
    check(
        vote.committed == committed,
        if committed {
            "a leader's message with an uncommitted vote"
        } else {
            "a vote request with a committed vote"
        },
    )
}

/// A log id no newer than the term that carries it.
fn log_id_within(id: &LogId, term: u64) -> Result<(), Refused> {
    check(id.index <= MAX_INDEX, "log index out of range")?;
    check(id.leader_id.term <= term, "log id from a later term")
}

/// Vote and PreVote requests.
pub fn vote_request(req: &VoteRequest<TypeConfig>, me: u64) -> Result<(), Refused> {
    peer_vote(&req.vote, me, false)?;
    match &req.last_log_id {
        Some(id) => log_id_within(id, req.vote.leader_id.term),
        None => Ok(()),
    }
}

/// A membership as it may enter the log: one or two non-empty configs whose voters all
/// have a node with peer URLs.
pub fn membership(m: &openraft::Membership<u64, crate::types::Member>) -> Result<(), Refused> {
    let configs = m.get_joint_config();
    check(
        (1..=2).contains(&configs.len()),
        "membership with no config or more than two",
    )?;
    let nodes: BTreeSet<u64> = m.nodes().map(|(id, _)| *id).collect();
    for config in configs {
        check(!config.is_empty(), "membership with an empty config")?;
        check(config.is_subset(&nodes), "a voter without a node")?;
    }
    check(
        m.nodes().all(|(_, node)| {
            !node.peer_urls.is_empty() && node.peer_urls.iter().all(|u| u.len() <= 4096)
        }),
        "a member without usable peer URLs",
    )
}

fn entry(e: &Entry) -> Result<(), Refused> {
    match &e.payload {
        EntryPayload::Membership(m) => membership(m),
        EntryPayload::Blank | EntryPayload::Normal(_) => Ok(()),
    }
}

/// AppendEntries, unary or one item of a stream: a committed leader vote that is not ours,
/// entries that follow `prev_log_id` and each other with terms that never decrease nor pass
/// the leader's, and a commit point consistent with them.
pub fn append_entries(req: &AppendEntriesRequest<TypeConfig>, me: u64) -> Result<(), Refused> {
    peer_vote(&req.vote, me, true)?;
    let term = req.vote.leader_id.term;
    if let Some(prev) = &req.prev_log_id {
        log_id_within(prev, term)?;
    }
    let mut last = req.prev_log_id;
    for e in &req.entries {
        log_id_within(&e.log_id, term)?;
        let expected = last.map_or(0, |l| l.index + 1);
        check(e.log_id.index == expected, "entries not consecutive")?;
        check(
            last.is_none_or(|l| l.leader_id.term <= e.log_id.leader_id.term),
            "entry terms decrease",
        )?;
        entry(e)?;
        last = Some(e.log_id);
    }
    let Some(commit) = &req.leader_commit else {
        return Ok(());
    };
    log_id_within(commit, term)?;
    let Some(last) = last else { return Ok(()) };
    // The commit point is a log id of the leader's log: past the entries it cannot have an
    // older term than they do, before them not a newer one, and within them it is one of them.
    if commit.index >= last.index {
        check(
            commit.leader_id.term >= last.leader_id.term,
            "commit point contradicts the entries",
        )?;
        if commit.index == last.index {
            check(*commit == last, "commit point contradicts the entries")?;
        }
    } else {
        check(
            commit.leader_id.term <= last.leader_id.term,
            "commit point contradicts the entries",
        )?;
        let first = req
            .prev_log_id
            .map_or(0, |p| p.index)
            .min(req.entries.first().map_or(last.index, |e| e.log_id.index));
        if commit.index >= first {
            let at = req.entries.iter().find(|e| e.log_id.index == commit.index);
            let matches = match at {
                Some(e) => e.log_id == *commit,
                None => req.prev_log_id.as_ref() == Some(commit),
            };
            check(matches, "commit point contradicts the entries")?;
        }
    }
    Ok(())
}

/// TransferLeader: from a leader that is not us; naming us only if we are a voter.
pub fn transfer_leader(
    req: &TransferLeaderRequest<TypeConfig>,
    me: u64,
    i_am_voter: bool,
) -> Result<(), Refused> {
    let from = req.from_leader();
    peer_vote(from, me, true)?;
    if let Some(id) = req.last_log_id() {
        log_id_within(id, from.leader_id.term)?;
    }
    check(
        *req.to_node_id() != me || i_am_voter,
        "leadership offered to a learner",
    )
}

/// A snapshot's header, checked before any of its data is received.
pub fn snapshot_header(vote: &Vote, meta: &SnapshotMeta, me: u64) -> Result<(), Refused> {
    peer_vote(vote, me, true)?;
    let term = vote.leader_id.term;
    if let Some(id) = &meta.last_log_id {
        log_id_within(id, term)?;
    }
    stored_membership(&meta.last_membership, meta.last_log_id.as_ref())
}

fn stored_membership(m: &StoredMembership, upto: Option<&LogId>) -> Result<(), Refused> {
    if let Some(id) = m.log_id() {
        check(
            upto.is_some_and(|last| id <= last),
            "snapshot membership newer than the snapshot",
        )?;
    }
    if m.membership().get_joint_config().is_empty() && m.log_id().is_none() {
        return Ok(()); // no membership yet (a snapshot of an uninitialised member)
    }
    membership(m.membership())
}

/// A vote in a peer's answer (it becomes ours if higher).
pub fn answer_vote(vote: &Vote) -> Result<(), Refused> {
    vote_in_bounds(vote)
}

/// The answer to a Vote or PreVote.
pub fn vote_response(resp: &VoteResponse<TypeConfig>) -> Result<(), Refused> {
    answer_vote(&resp.vote)?;
    match &resp.last_log_id {
        Some(id) => check(id.index <= MAX_INDEX, "log index out of range"),
        None => Ok(()),
    }
}

/// The answer to an AppendEntries that sent entries up to `sent`.
pub fn append_response(
    resp: &AppendEntriesResponse<TypeConfig>,
    sent: Option<&LogId>,
) -> Result<(), Refused> {
    match resp {
        AppendEntriesResponse::HigherVote(v) => answer_vote(v),
        AppendEntriesResponse::PartialSuccess(Some(id)) => check(
            sent.is_some_and(|s| id <= s),
            "acknowledges entries never sent",
        ),
        _ => Ok(()),
    }
}

/// One result of a stream of appends whose entries so far reach `sent`.
pub fn stream_result(
    result: &StreamAppendResult<TypeConfig>,
    sent: Option<&LogId>,
) -> Result<(), Refused> {
    use openraft::raft::StreamAppendError;
    match result {
        Ok(Some(id)) | Err(StreamAppendError::Conflict(id)) => check(
            sent.is_some_and(|s| id <= s),
            "acknowledges entries never sent",
        ),
        Ok(None) => Ok(()),
        Err(StreamAppendError::HigherVote(v)) => answer_vote(v),
    }
}

/// The answer to a snapshot.
pub fn snapshot_response(resp: &SnapshotResponse<TypeConfig>) -> Result<(), Refused> {
    answer_vote(&resp.vote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Member, Request};
    use openraft::Membership;
    use std::collections::BTreeMap;

    fn vote(term: u64, node: u64, committed: bool) -> Vote {
        let mut v = Vote::new(term, node);
        v.committed = committed;
        v
    }

    fn id(term: u64, index: u64) -> LogId {
        LogId::new_term_index(term, index)
    }

    fn blank(term: u64, index: u64) -> Entry {
        Entry {
            log_id: id(term, index),
            payload: EntryPayload::Normal(Request::default()),
        }
    }

    fn append(
        prev: Option<LogId>,
        entries: Vec<Entry>,
        commit: Option<LogId>,
    ) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: vote(5, 2, true),
            prev_log_id: prev,
            entries,
            leader_commit: commit,
        }
    }

    #[test]
    fn votes_with_absurd_terms_or_our_own_name_are_refused() {
        let ok = VoteRequest {
            vote: vote(7, 2, false),
            last_log_id: Some(id(6, 40)),
            leadership_transfer: false,
        };
        assert_eq!(vote_request(&ok, 1), Ok(()));
        let mut max = ok.clone();
        max.vote = vote(u64::MAX, 2, false);
        assert!(vote_request(&max, 1).is_err());
        assert!(vote_request(&ok, 2).is_err(), "a vote naming the receiver");
        let mut committed = ok.clone();
        committed.vote.committed = true;
        assert!(vote_request(&committed, 1).is_err());
        let mut ahead = ok;
        ahead.last_log_id = Some(id(8, 1));
        assert!(vote_request(&ahead, 1).is_err());
    }

    #[test]
    fn appends_must_follow_and_agree_with_their_commit_point() {
        let good = append(
            Some(id(4, 9)),
            vec![blank(4, 10), blank(5, 11)],
            Some(id(5, 11)),
        );
        assert_eq!(append_entries(&good, 1), Ok(()));
        // A leader's commit point may be past what it sends (a lagging follower).
        let behind = append(Some(id(4, 9)), vec![blank(4, 10)], Some(id(5, 30)));
        assert_eq!(append_entries(&behind, 1), Ok(()));
        let heartbeat = append(Some(id(5, 11)), vec![], Some(id(5, 11)));
        assert_eq!(append_entries(&heartbeat, 1), Ok(()));
        for (why, bad) in [
            ("gap", append(Some(id(4, 9)), vec![blank(4, 11)], None)),
            (
                "decreasing terms",
                append(Some(id(4, 9)), vec![blank(4, 10), blank(3, 11)], None),
            ),
            (
                "term past the leader's",
                append(Some(id(4, 9)), vec![blank(6, 10)], None),
            ),
            (
                "commit contradicts entries",
                append(Some(id(4, 9)), vec![blank(5, 10)], Some(id(3, 50))),
            ),
            (
                "commit inside entries but not one of them",
                append(
                    Some(id(4, 9)),
                    vec![blank(4, 10), blank(5, 11)],
                    Some(id(5, 10)),
                ),
            ),
            (
                "index out of range",
                append(Some(id(4, u64::MAX - 1)), vec![], None),
            ),
        ] {
            assert!(append_entries(&bad, 1).is_err(), "{why}");
        }
        let mut uncommitted = good.clone();
        uncommitted.vote.committed = false;
        assert!(append_entries(&uncommitted, 1).is_err());
        assert!(append_entries(&good, 2).is_err(), "from ourselves");
    }

    #[test]
    fn memberships_must_name_nodes_for_their_voters() {
        let node = |url: &str| Member {
            name: String::new(),
            peer_urls: vec![url.into()],
            client_urls: vec![],
        };
        let good = Membership::new(
            vec![BTreeSet::from([1, 2])],
            BTreeMap::from([(1, node("http://a:1")), (2, node("http://b:2"))]),
        )
        .unwrap();
        assert_eq!(membership(&good), Ok(()));
        // openraft will not build one with a voter missing its node; a peer can send one.
        #[derive(serde::Serialize)]
        struct Raw {
            configs: Vec<BTreeSet<u64>>,
            nodes: BTreeMap<u64, Member>,
        }
        let raw = Raw {
            configs: vec![BTreeSet::from([1, 2])],
            nodes: BTreeMap::from([(1, node("http://a:1"))]),
        };
        let orphan: Membership<u64, Member> =
            crate::types::decode(&crate::types::encode(&raw).unwrap()).unwrap();
        assert!(membership(&orphan).is_err());
        let mut entry = blank(5, 10);
        entry.payload = EntryPayload::Membership(orphan);
        assert!(append_entries(&append(Some(id(5, 9)), vec![entry], None), 1).is_err());
    }

    #[test]
    fn answers_that_acknowledge_more_than_was_sent_are_refused() {
        let sent = id(5, 10);
        assert_eq!(stream_result(&Ok(Some(id(5, 10))), Some(&sent)), Ok(()));
        assert!(stream_result(&Ok(Some(id(5, 11))), Some(&sent)).is_err());
        assert!(
            append_response(
                &AppendEntriesResponse::HigherVote(vote(u64::MAX, 3, true)),
                None
            )
            .is_err()
        );
    }
}
