//! Multi-process cluster tests: real member processes on loopback, driven with the real
//! etcdctl 3.4 (Debian `etcd-client`), compared with a real etcd 3.4 cluster where the
//! outputs can be compared. `scripts/setup` installs both.

mod backup;
mod etcdctl;
mod faults;
mod fixture;
mod membership;
mod raftkvctl;
