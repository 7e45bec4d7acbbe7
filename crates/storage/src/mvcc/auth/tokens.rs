//! etcd's simple tokens (`auth/simple_token.go`): in memory on each member, never stored or
//! replicated as such. An Authenticate entry applied at log index `i` with the random prefix
//! `p` makes `"p.i"` a token of its user on every member that applies it; a token lives
//! `--auth-token-ttl` (300 s by default) past its last use, and dies with its user's deletion
//! or password change, with `auth disable`, and with the member's restart (clients then
//! authenticate again, as they do with etcd).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// etcd's default `--auth-token-ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Longest token prefix a log entry may carry (etcd's are 16 letters).
pub const MAX_PREFIX_BYTES: usize = 64;
/// Fewest live tokens before expired ones are swept on assignment.
const SWEEP_FLOOR: usize = 1024;

/// The tokens this member knows.
#[derive(Debug)]
pub struct SimpleTokens {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    ttl: Duration,
    /// token → (user, expiry).
    tokens: HashMap<String, (String, Instant)>,
    /// Sweep expired tokens when the map reaches this size (amortised: doubles each time).
    sweep_at: usize,
}

impl Default for SimpleTokens {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                ttl: DEFAULT_TTL,
                tokens: HashMap::new(),
                sweep_at: SWEEP_FLOOR,
            }),
        }
    }
}

impl SimpleTokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the time a token lives past its last use (`--auth-token-ttl`; 0 keeps etcd's
    /// default, as etcd does).
    pub fn set_ttl(&self, ttl: Duration) {
        self.lock().ttl = if ttl.is_zero() { DEFAULT_TTL } else { ttl };
    }

    /// The token an Authenticate entry at `index` with `prefix` makes (etcd's format).
    pub fn token(prefix: &str, index: u64) -> String {
        format!("{prefix}.{index}")
    }

    /// Makes `token` a token of `user`.
    pub fn assign(&self, token: String, user: &str) {
        let mut inner = self.lock();
        let now = Instant::now();
        if inner.tokens.len() >= inner.sweep_at {
            inner.tokens.retain(|_, (_, expiry)| *expiry > now);
            inner.sweep_at = (inner.tokens.len() * 2).max(SWEEP_FLOOR);
        }
        let expiry = now + inner.ttl;
        inner.tokens.insert(token, (user.to_string(), expiry));
    }

    /// The user of `token` if it is live, extending its life (etcd resets the TTL on use).
    pub fn user(&self, token: &str) -> Option<String> {
        let mut inner = self.lock();
        let now = Instant::now();
        let ttl = inner.ttl;
        match inner.tokens.get_mut(token) {
            Some((user, expiry)) if *expiry > now => {
                *expiry = now + ttl;
                Some(user.clone())
            }
            Some(_) => {
                inner.tokens.remove(token);
                None
            }
            None => None,
        }
    }

    /// Forgets every token of `user` (deleted, or its password changed).
    pub fn invalidate_user(&self, user: &str) {
        self.lock().tokens.retain(|_, (u, _)| u != user);
    }

    /// Forgets every token (`auth disable`).
    pub fn clear(&self) {
        self.lock().tokens.clear();
    }

    /// How many tokens are held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.lock().tokens.len()
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The log index a simple token names, if it has etcd's `<prefix>.<index>` form.
pub fn token_index(token: &str) -> Option<u64> {
    let (prefix, index) = token.split_once('.')?;
    if prefix.is_empty() || prefix.len() > MAX_PREFIX_BYTES || index.contains('.') {
        return None;
    }
    index.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_live_until_their_ttl_passes_unused_and_die_with_their_user() {
        let t = SimpleTokens::default();
        t.set_ttl(Duration::from_millis(200));
        t.assign(SimpleTokens::token("abc", 7), "alice");
        t.assign(SimpleTokens::token("def", 8), "bob");
        assert_eq!(t.user("abc.7").as_deref(), Some("alice"));
        assert_eq!(t.user("abc.8"), None);
        t.invalidate_user("alice");
        assert_eq!(t.user("abc.7"), None);
        assert_eq!(t.user("def.8").as_deref(), Some("bob"));
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(t.user("def.8"), None, "expired");
        assert!(t.is_empty(), "an expired token found is dropped");
        t.assign("x.1".into(), "carol");
        t.clear();
        assert_eq!(t.user("x.1"), None);
    }

    #[test]
    fn expired_tokens_are_swept_as_new_ones_arrive() {
        let t = SimpleTokens::default();
        t.set_ttl(Duration::from_millis(1));
        for i in 0..SWEEP_FLOOR as u64 {
            t.assign(SimpleTokens::token("p", i), "u");
        }
        std::thread::sleep(Duration::from_millis(5));
        t.assign("q.1".into(), "u");
        assert_eq!(
            t.len(),
            1,
            "the expired ones went on the assignment that found them"
        );
    }

    #[test]
    fn only_etcds_token_form_names_an_index() {
        assert_eq!(token_index("abcdefghijklmnop.42"), Some(42));
        for bad in [
            "",
            ".",
            "abc",
            ".5",
            "a.b",
            "a.5.6",
            "a.-1",
            "a.99999999999999999999",
        ] {
            assert_eq!(token_index(bad), None, "{bad:?}");
        }
        assert_eq!(token_index(&format!("{}.1", "p".repeat(65))), None);
    }
}
