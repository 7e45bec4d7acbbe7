//! A fault proxy in front of each member's peer port, so the harness can partition the
//! network link by link. Members advertise the proxy's address, so every member-to-member
//! connection to member `to` arrives at `to`'s proxy; the proxy tells which member dialed
//! by finding the process that owns the connecting socket (Linux `/proc/net/tcp` and
//! `/proc/<pid>/fd`), then forwards, holds (a cut link: bytes are not delivered, like a
//! dropped route) or delays bytes according to the link's current rule.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The rule for traffic from one member to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Up,
    /// Nothing is delivered; connections stay open but silent (and are dropped on heal).
    Cut,
    /// Each chunk of bytes waits this long before it is forwarded.
    Delay(Duration),
}

/// Shared state of every proxy: the link rules and the member processes.
pub struct Net {
    rules: watch::Sender<HashMap<(usize, usize), Link>>,
    pids: Arc<Mutex<Vec<Option<u32>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Net {
    /// Starts one proxy per member on the given ports, forwarding to `peer_ports`.
    pub fn start(proxy_ports: Vec<u16>, peer_ports: Vec<u16>) -> Net {
        let (rules, _) = watch::channel(HashMap::new());
        let pids = Arc::new(Mutex::new(vec![None; peer_ports.len()]));
        let mut tasks = Vec::new();
        for (to, (&listen, &target)) in proxy_ports.iter().zip(&peer_ports).enumerate() {
            let listener = std::net::TcpListener::bind(("127.0.0.1", listen)).expect("proxy port");
            listener
                .set_nonblocking(true)
                .expect("non-blocking proxy socket");
            let listener = TcpListener::from_std(listener).expect("proxy listener");
            let rx = rules.subscribe();
            let pids = pids.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((conn, from_addr)) = listener.accept().await else {
                        continue;
                    };
                    let from = owner(&pids, from_addr, listen);
                    tokio::spawn(relay(conn, target, from, to, rx.clone()));
                }
            }));
        }
        Net { rules, pids, tasks }
    }

    /// Records member `i`'s process id (None once it is gone).
    pub fn set_pid(&self, i: usize, pid: Option<u32>) {
        let mut pids = self.pids.lock().unwrap();
        if pids.len() <= i {
            pids.resize(i + 1, None);
        }
        pids[i] = pid;
    }

    /// Sets the rule for traffic from `from` to `to`.
    pub fn set(&self, from: usize, to: usize, link: Link) {
        self.rules.send_modify(|r| {
            r.insert((from, to), link);
        });
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.set(x, y, Link::Cut);
                self.set(y, x, Link::Cut);
            }
        }
    }

    /// Every link up again.
    pub fn heal(&self) {
        self.rules.send_modify(|r| r.clear());
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The member whose process owns the socket that connected from `addr` to `proxy_port`.
fn owner(pids: &Mutex<Vec<Option<u32>>>, addr: SocketAddr, proxy_port: u16) -> Option<usize> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!("0100007F:{:04X}", addr.port());
    let remote = format!("0100007F:{proxy_port:04X}");
    let inode = tcp.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 9 && f[1] == local && f[2] == remote).then(|| f[9].to_string())
    })?;
    let needle = format!("socket:[{inode}]");
    let pids = pids.lock().unwrap().clone();
    pids.iter().position(|pid| {
        pid.is_some_and(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|target| target.to_string_lossy() == needle)
                })
        })
    })
}

fn rule(
    rules: &watch::Receiver<HashMap<(usize, usize), Link>>,
    from: Option<usize>,
    to: usize,
) -> Link {
    from.and_then(|f| rules.borrow().get(&(f, to)).copied())
        .unwrap_or(Link::Up)
}

async fn relay(
    inbound: TcpStream,
    target: u16,
    from: Option<usize>,
    to: usize,
    rules: watch::Receiver<HashMap<(usize, usize), Link>>,
) {
    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (ri, wi) = inbound.into_split();
    let (ro, wo) = outbound.into_split();
    // Requests flow from -> to; responses to -> from: both obey their own direction's rule.
    let up = pump(ri, wo, from, Some(to), rules.clone());
    let down = pump(ro, wi, Some(to), from, rules);
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Copies bytes while the link allows; on a cut it stops delivering, and when the cut
/// heals it drops the connection (its bytes in between are lost, as on a real partition).
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    from: Option<usize>,
    to: Option<usize>,
    mut rules: watch::Receiver<HashMap<(usize, usize), Link>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let link = |rules: &watch::Receiver<_>| match to {
        Some(to) => rule(rules, from, to),
        None => Link::Up,
    };
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        match link(&rules) {
            Link::Up => {}
            Link::Delay(d) => tokio::time::sleep(d).await,
            Link::Cut => {
                // Swallow everything until the link heals, then end the connection.
                loop {
                    tokio::select! {
                        read = r.read(&mut buf) => if matches!(read, Ok(0) | Err(_)) { return },
                        changed = rules.changed() => {
                            if changed.is_err() || link(&rules) != Link::Cut {
                                return;
                            }
                        }
                    }
                }
            }
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
