//! Basic auth: users and their bcrypt hashes, checked at a bounded cost.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

/// Users and their bcrypt hashes, and what checking them needs.
#[derive(Clone)]
pub struct BasicAuth {
    /// Users and their bcrypt hashes; empty means no authentication.
    users: Arc<BTreeMap<String, String>>,
    /// Digests of credentials bcrypt already accepted. bcrypt costs tens of milliseconds on
    /// purpose; Prometheus sends the same credentials on every scrape, so only the first one
    /// pays it. Digests, not passwords, are kept.
    verified: Arc<Mutex<HashSet<[u8; 32]>>>,
    /// bcrypt runs at most this many at once: a flood of wrong passwords costs the node a
    /// bounded share of CPU, and cached credentials skip the queue.
    pub(super) verifying: Arc<Semaphore>,
}

impl Default for BasicAuth {
    /// No users: no authentication.
    fn default() -> Self {
        Self::new(BTreeMap::new())
    }
}

/// Accepted credentials remembered at most; past it the cache starts over (a changed
/// password must not leave the old one usable for ever, and memory stays bounded).
const VERIFIED_CACHE_ENTRIES: usize = 64;

/// bcrypt verifications at once.
pub(super) const CONCURRENT_VERIFICATIONS: usize = 2;

/// How long a request waits for a bcrypt slot before it is turned away as busy: a flood of
/// wrong passwords must not pile up waiting requests (each holding a connection) behind the
/// two slots.
const VERIFICATION_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// The answer to a request's credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Authorized,
    Refused,
    /// Every bcrypt slot stayed busy (a flood of new credentials): try again shortly.
    Busy,
}

impl BasicAuth {
    #[must_use]
    pub fn new(users: BTreeMap<String, String>) -> Self {
        Self {
            users: Arc::new(users),
            verified: Arc::default(),
            verifying: Arc::new(Semaphore::new(CONCURRENT_VERIFICATIONS)),
        }
    }

    /// Whether requests must carry credentials.
    #[must_use]
    pub fn is_on(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether an `Authorization` header value names a user with the right password.
    /// Credentials accepted before are answered at once; new ones wait at most
    /// [`VERIFICATION_WAIT`] for a bcrypt slot.
    pub async fn authorized(&self, authorization: Option<&[u8]>) -> Verdict {
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return Verdict::Refused;
        };
        // An unknown user is checked against some hash all the same, so that the answer's
        // timing does not tell which users exist.
        let (known, hash) = match self.users.get(&user) {
            Some(hash) => (true, hash.clone()),
            None => match self.users.values().next() {
                Some(hash) => (false, hash.clone()),
                None => return Verdict::Refused,
            },
        };
        let digest: [u8; 32] = Sha256::new()
            .chain_update(&user)
            .chain_update([0])
            .chain_update(&password)
            .chain_update([0])
            .chain_update(&hash)
            .finalize()
            .into();
        if known && self.cache().contains(&digest) {
            return Verdict::Authorized;
        }
        let Ok(Ok(_permit)) =
            tokio::time::timeout(VERIFICATION_WAIT, self.verifying.acquire()).await
        else {
            return Verdict::Busy;
        };
        let matches =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if known && matches {
            let mut cache = self.cache();
            if cache.len() >= VERIFIED_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(digest);
        }
        if known && matches {
            Verdict::Authorized
        } else {
            Verdict::Refused
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        // A panic while holding the lock leaves a set of digests, still valid.
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// User and password of a `Basic` authorization header.
fn basic_credentials(header: &[u8]) -> Option<(String, String)> {
    let header = std::str::from_utf8(header).ok()?;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}
