//! How a workload proves who it is before the CA signs for it.
//!
//! [`Authenticator`] is the seam: [`LocalTokens`] serves local mode (the control plane hands
//! each workload a random token, `weft up` passes it on); Kubernetes TokenReview plugs in
//! behind the same trait later.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{PoisonError, RwLock};

use super::SpiffeId;

/// Why a caller was not authenticated as the identity it claimed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The request carried no token.
    #[error("no token presented")]
    MissingToken,
    /// The token is unknown, expired, or not the one issued for the claimed identity.
    #[error("token is not valid for {0}")]
    InvalidToken(SpiffeId),
    /// The token is valid but proves a different identity than the one claimed.
    #[error("token proves {actual}, not the claimed {claimed}")]
    IdentityMismatch {
        /// The identity the caller asked for.
        claimed: Box<SpiffeId>,
        /// The identity the token proves.
        actual: Box<SpiffeId>,
    },
    /// The authenticator could not decide (e.g. the Kubernetes API was unreachable).
    #[error("authenticator unavailable: {0}")]
    Unavailable(String),
}

/// Checks that `token` proves the caller is `claimed`.
pub trait Authenticator: Send + Sync {
    /// Succeeds only if `token` proves the caller is `claimed`.
    fn authenticate(
        &self,
        token: &str,
        claimed: &SpiffeId,
    ) -> impl Future<Output = Result<(), AuthError>> + Send;
}

/// A shared authenticator (e.g. the [`LocalTokens`] that `weft up` also issues from).
impl<A: Authenticator> Authenticator for std::sync::Arc<A> {
    fn authenticate(
        &self,
        token: &str,
        claimed: &SpiffeId,
    ) -> impl Future<Output = Result<(), AuthError>> + Send {
        A::authenticate(self, token, claimed)
    }
}

/// Length of a token's random part, in bytes (256 bits).
const TOKEN_BYTES: usize = 32;

/// Local-mode tokens: one random token per workload identity (namespace and service account),
/// held in memory by the control plane.
#[derive(Debug, Default)]
pub struct LocalTokens {
    tokens: RwLock<HashMap<SpiffeId, String>>,
}

impl LocalTokens {
    /// An empty store: every token is refused until one is issued.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the token for `identity`, creating one the first time, so handing tokens out
    /// again (e.g. on a `weft up` restart) keeps workloads that already hold one working.
    pub fn issue(&self, identity: &SpiffeId) -> String {
        let mut tokens = self.tokens.write().unwrap_or_else(PoisonError::into_inner);
        tokens.entry(identity.clone()).or_insert_with(new_token).clone()
    }

    /// Replaces `identity`'s token with a fresh one; the old one stops working.
    pub fn rotate(&self, identity: &SpiffeId) -> String {
        let token = new_token();
        let mut tokens = self.tokens.write().unwrap_or_else(PoisonError::into_inner);
        tokens.insert(identity.clone(), token.clone());
        token
    }

    /// Forgets `identity`'s token; it is refused from now on.
    pub fn revoke(&self, identity: &SpiffeId) {
        self.tokens.write().unwrap_or_else(PoisonError::into_inner).remove(identity);
    }

    fn check(&self, token: &str, claimed: &SpiffeId) -> Result<(), AuthError> {
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        let tokens = self.tokens.read().unwrap_or_else(PoisonError::into_inner);
        match tokens.get(claimed) {
            Some(expected) if constant_time_eq(expected.as_bytes(), token.as_bytes()) => Ok(()),
            _ => Err(AuthError::InvalidToken(claimed.clone())),
        }
    }
}

impl Authenticator for LocalTokens {
    async fn authenticate(&self, token: &str, claimed: &SpiffeId) -> Result<(), AuthError> {
        self.check(token, claimed)
    }
}

fn new_token() -> String {
    let bytes: [u8; TOKEN_BYTES] = rand::random();
    let mut token = String::with_capacity(5 + 2 * TOKEN_BYTES);
    token.push_str("weft.");
    for b in bytes {
        token.push(char::from(HEX[usize::from(b >> 4)]));
        token.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    token
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Compares in time that depends only on the lengths, so a caller cannot find a token byte by
/// byte from response times. Token length is public (fixed), so an early length check leaks
/// nothing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn id(ns: &str, sa: &str) -> SpiffeId {
        SpiffeId::new("cluster.local", ns, sa).unwrap()
    }

    #[tokio::test]
    async fn issued_token_authenticates_its_own_identity_only() {
        let store = LocalTokens::new();
        let cart = id("shop", "cart");
        let token = store.issue(&cart);
        assert_eq!(store.authenticate(&token, &cart).await, Ok(()));
        assert_eq!(
            store.authenticate(&token, &id("shop", "payments")).await,
            Err(AuthError::InvalidToken(id("shop", "payments")))
        );
        assert!(store.authenticate(&token, &id("other", "cart")).await.is_err());
    }

    #[tokio::test]
    async fn wrong_empty_and_unissued_tokens_are_refused() {
        let store = LocalTokens::new();
        let cart = id("shop", "cart");
        assert_eq!(store.authenticate("weft.00", &cart).await, Err(AuthError::InvalidToken(cart.clone())));
        let token = store.issue(&cart);
        assert_eq!(store.authenticate("", &cart).await, Err(AuthError::MissingToken));
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(store.authenticate(&tampered, &cart).await, Err(AuthError::InvalidToken(cart.clone())));
    }

    #[tokio::test]
    async fn issue_is_stable_and_rotate_or_revoke_invalidates_old_token() {
        let store = LocalTokens::new();
        let cart = id("shop", "cart");
        let first = store.issue(&cart);
        assert_eq!(store.issue(&cart), first);
        assert_ne!(store.issue(&id("shop", "payments")), first, "tokens are per identity");

        let second = store.rotate(&cart);
        assert_ne!(second, first);
        assert!(store.authenticate(&first, &cart).await.is_err());
        assert!(store.authenticate(&second, &cart).await.is_ok());

        store.revoke(&cart);
        assert!(store.authenticate(&second, &cart).await.is_err());
    }

    #[test]
    fn constant_time_eq_compares_whole_contents() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"xbc"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
