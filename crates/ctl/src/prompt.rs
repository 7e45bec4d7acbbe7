//! etcdctl's password prompt: bgentry/speakeasy's `Ask`, which etcdctl uses for `--user NAME`
//! without a password and for `user add` / `user passwd`.
//!
//! The prompt goes to stdout; `/bin/stty -echo` runs on our stdin, stdout and stderr (without
//! a terminal it says so on stderr and the prompt goes on, as under etcdctl); one line is
//! read from stdin (up to a newline or the end of the input), a trailing `\r` and the white
//! space around it dropped; `/bin/stty echo` puts echo back, and a newline follows on
//! stdout. A hangup, interrupt, quit or terminate signal while waiting turns echo back on and
//! exits with 255 (speakeasy's `os.Exit(-1)`), so no terminal is left without echo.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::anyhow;
use tokio::signal::unix::{Signal, SignalKind, signal};

const STTY: &str = "/bin/stty";

/// Asks for a password with `prompt`, echo off. Fails as speakeasy does when echo cannot be
/// turned off or stdin cannot be read.
pub async fn ask(prompt: &str) -> anyhow::Result<String> {
    let mut signals = Signals::new()?;
    print!("{prompt}");
    std::io::stdout().flush()?;
    stty("-echo").map_err(|e| {
        anyhow!(
            "failed turning off console echo for password entry:\n\t{}",
            crate::watch::spawn_text(STTY, &e)
        )
    })?;
    let line = tokio::task::spawn_blocking(read_line);
    let read = tokio::select! {
        read = line => read.map_err(|e| anyhow!("{e}"))?,
        () = signals.any() => {
            let _ = stty("echo");
            std::process::exit(255);
        }
    };
    let _ = stty("echo");
    println!();
    let line = read.map_err(|e| anyhow!("failed during password entry: {e}"))?;
    Ok(password_of(&line))
}

/// Runs `stty ARG` (named `stty`, as speakeasy names it, so its messages match) on our
/// stdin, stdout and stderr, and waits for it.
fn stty(arg: &str) -> std::io::Result<()> {
    Command::new(STTY).arg0("stty").arg(arg).status().map(drop)
}

/// One line from stdin, a byte at a time (speakeasy reads no further than the newline, so
/// what follows is left for the command: `txn` reads its requests after the password).
fn read_line() -> std::io::Result<Vec<u8>> {
    let stdin = std::io::stdin();
    let mut stdin = stdin.lock();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stdin.read(&mut byte) {
            Ok(0) => return Ok(line),
            Ok(_) if byte[0] == b'\n' => return Ok(line),
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The password in a line as speakeasy returns it: without a trailing `\r`, and without the
/// white space around it.
fn password_of(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(line).trim().to_string()
}

/// The signals speakeasy catches while echo is off.
struct Signals([Signal; 4]);

impl Signals {
    fn new() -> anyhow::Result<Self> {
        Ok(Self([
            signal(SignalKind::hangup())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::quit())?,
            signal(SignalKind::terminate())?,
        ]))
    }

    /// Waits for any of them.
    async fn any(&mut self) {
        let [hangup, interrupt, quit, terminate] = &mut self.0;
        tokio::select! {
            _ = hangup.recv() => {}
            _ = interrupt.recv() => {}
            _ = quit.recv() => {}
            _ = terminate.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::password_of;

    #[test]
    fn passwords_as_speakeasy_reads_them() {
        assert_eq!(password_of(b"secret"), "secret");
        assert_eq!(password_of(b"secret\r"), "secret");
        assert_eq!(password_of(b"  pass word \t"), "pass word");
        assert_eq!(password_of(b""), "");
        assert_eq!(password_of(b"p\xffw"), "p\u{fffd}w");
    }
}
