//! Multi-process cluster tests: real member processes on loopback, driven with the real
//! etcdctl 3.4 (Debian `etcd-client`), compared with a real etcd 3.4 cluster where the
//! outputs can be compared. `scripts/setup` installs both. `chaos` checks linearizability
//! under faults, with the checker in `linearizable` and the partitioning `proxy`.

mod auth_client;
mod auth_enforce;
mod auth_jwt;
mod auth_management;
mod auto_compaction;
mod backup;
mod chaos;
mod chaos_auth;
mod chaos_compaction;
mod chaos_gateway;
mod chaos_lease;
mod chaos_lock;
mod chaos_mirror;
mod chaos_watch;
mod client;
mod corruption;
mod disk_full;
mod endpoint_cluster;
mod etcd_import;
mod etcdctl;
mod faults;
mod fixture;
mod gateway;
mod grpc_health;
mod hostile;
mod hostile_peer;
mod http_access;
mod lease;
mod linearizable;
mod lock;
mod maintenance;
mod make_mirror;
mod member_flags;
mod member_update;
mod membership;
mod metrics;
mod operator;
mod peer_tls;
mod proxy;
mod quota;
mod raftkvctl;
mod raftkvctl_lease;
mod raftkvctl_lock;
mod raftkvctl_watch;
mod read_your_writes;
mod tls;
mod watch;
