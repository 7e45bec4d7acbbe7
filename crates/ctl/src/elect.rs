//! `elect <election-name> [proposal]`: etcdctl 3.4's elect command on raftkv-client's
//! [`Election`], with its output, messages and exit codes.
//!
//! With a proposal it campaigns, prints its key once elected (as `get` prints it), and
//! resigns on SIGINT or SIGTERM; a signal while waiting gives up the candidacy
//! (`context canceled`). With `-l` it prints the leader and each change of it until a
//! signal. Either way the session's 60 s lease is granted first, as etcdctl grants it.

use std::time::Duration;

use anyhow::anyhow;
use raftkv_client::proto::RangeRequest;
use raftkv_client::{Client, Election, Session, SessionOptions};

use crate::bad_args;
use crate::lock::{GetDisplay, Interrupt};

/// `elect`'s flags and arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ElectArgs {
    /// Observation mode.
    #[arg(short = 'l', long)]
    pub listen: bool,
    /// The election name, and the proposal to campaign with.
    pub args: Vec<String>,
}

/// Runs `elect` with the global `-w` format and `--hex`.
pub async fn run(
    cli: &crate::Cli,
    dial_timeout: Duration,
    format: &str,
    hex: bool,
    args: ElectArgs,
) -> anyhow::Result<()> {
    if !(1..=2).contains(&args.args.len()) {
        return Err(bad_args(anyhow!(
            "elect takes one election name argument and an optional proposal argument"
        )));
    }
    let display = GetDisplay::new(format, hex)?;
    let name = &args.args[0];
    let options = SessionOptions::new().first_answer_within(dial_timeout + Duration::from_secs(1));
    match (args.args.get(1), args.listen) {
        (None, false) => Err(bad_args(anyhow!("no proposal argument but -l not set"))),
        (Some(_), true) => Err(bad_args(anyhow!("proposal given but -l is set"))),
        (None, true) => {
            let client = cli.client().await?;
            let session = Session::with_options(&client, options).await?;
            observe(&session, name, &display).await
        }
        (Some(proposal), false) => {
            let client = cli.client().await?;
            let session = Session::with_options(&client, options).await?;
            campaign(&client, &session, name, proposal, &display).await
        }
    }
}

/// Prints the leader and each change until a signal; "elect: observer lost" if observing
/// ends first.
async fn observe(session: &Session, name: &str, display: &GetDisplay) -> anyhow::Result<()> {
    let mut interrupt = Interrupt::new()?;
    let election = Election::new(session, name);
    let mut leaders = election.observe();
    loop {
        tokio::select! {
            leader = leaders.next() => match leader {
                Some(leader) => display.show(&leader)?,
                None => anyhow::bail!("elect: observer lost"),
            },
            _ = interrupt.wait() => return Ok(()),
        }
    }
}

/// Campaigns, prints the key once elected, and resigns at a signal; "elect: session
/// expired" if the session ends first.
async fn campaign(
    client: &Client,
    session: &Session,
    name: &str,
    proposal: &str,
    display: &GetDisplay,
) -> anyhow::Result<()> {
    let mut interrupt = Interrupt::new()?;
    let mut election = Election::new(session, name);
    election
        .campaign_or_cancel(proposal.to_string(), interrupt.wait())
        .await?;
    let mine = client
        .range(RangeRequest {
            key: election.key().as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await?;
    display.show(&mine)?;
    tokio::select! {
        _ = interrupt.wait() => Ok(election.resign().await?),
        _ = session.done() => Err(anyhow!("elect: session expired")),
    }
}
