//! How a workload proves who it is before the CA signs for it.
//!
//! [`Authenticator`] is the seam: [`LocalTokens`] serves local mode; Kubernetes TokenReview
//! plugs in behind the same trait later.
//!
//! A local token is `weft1.<spiffe-id>.<mac>`: the identity it proves, in clear, and the
//! HMAC-SHA256 of that SPIFFE ID under the CA directory's `token-key` (32 random bytes, mode
//! 0600), as lowercase hex. Nothing per workload is stored: anyone holding the key (the control
//! plane, `weft token`, [`token_for`]) can mint a token, and the control plane checks one with
//! a constant-time MAC comparison. Rotating the key file invalidates every token.

use std::fs;
use std::future::Future;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ring::hmac;

use super::SpiffeId;

/// File name of the token key inside the CA directory.
pub const TOKEN_KEY_FILE: &str = "token-key";

/// Length of the token key, in bytes (256 bits).
pub const TOKEN_KEY_BYTES: usize = 32;

/// Every token starts with this (the format's version).
const PREFIX: &str = "weft1.";

/// Why a caller was not authenticated as the identity it claimed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The request carried no token.
    #[error("no token presented")]
    MissingToken,
    /// The token is malformed, forged, or was minted under another key.
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

/// A shared authenticator.
impl<A: Authenticator> Authenticator for std::sync::Arc<A> {
    fn authenticate(
        &self,
        token: &str,
        claimed: &SpiffeId,
    ) -> impl Future<Output = Result<(), AuthError>> + Send {
        A::authenticate(self, token, claimed)
    }
}

/// Why the token key could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum TokenKeyError {
    /// Reading or writing the key (or its directory) failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The key file does not hold exactly [`TOKEN_KEY_BYTES`] bytes.
    #[error("{path}: a token key is {TOKEN_KEY_BYTES} bytes, this file has {len}")]
    BadLength {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
}

/// Local-mode tokens: HMAC-SHA256 of the SPIFFE ID under one mesh-wide key.
pub struct LocalTokens {
    key: hmac::Key,
}

impl std::fmt::Debug for LocalTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("LocalTokens").finish_non_exhaustive()
    }
}

impl Default for LocalTokens {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalTokens {
    /// Tokens under a fresh random key held only in memory (tests, throwaway meshes).
    pub fn new() -> Self {
        let bytes: [u8; TOKEN_KEY_BYTES] = rand::random();
        Self::from_key(&bytes)
    }

    /// Tokens under `key`.
    pub fn from_key(key: &[u8; TOKEN_KEY_BYTES]) -> Self {
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, key) }
    }

    /// Loads `dir/token-key`, or creates it (directory 0700, key 0600) when it does not exist.
    /// Concurrent first starts agree on one key: the file is created exclusively and whoever
    /// loses the race reads the winner's.
    pub fn load_or_generate(dir: &Path) -> Result<Self, TokenKeyError> {
        let path = dir.join(TOKEN_KEY_FILE);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| TokenKeyError::Io { path, source }
        };
        match fs::read(&path) {
            Ok(bytes) => return Self::from_file_bytes(&path, &bytes),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
        let key: [u8; TOKEN_KEY_BYTES] = rand::random();
        match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(mut file) => {
                file.write_all(&key).and_then(|()| file.sync_all()).map_err(io(&path))?;
                tracing::info!(path = %path.display(), "created workload token key");
                Ok(Self::from_key(&key))
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let bytes = fs::read(&path).map_err(io(&path))?;
                Self::from_file_bytes(&path, &bytes)
            }
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn from_file_bytes(path: &Path, bytes: &[u8]) -> Result<Self, TokenKeyError> {
        let key: &[u8; TOKEN_KEY_BYTES] = bytes
            .try_into()
            .map_err(|_| TokenKeyError::BadLength { path: path.to_owned(), len: bytes.len() })?;
        Ok(Self::from_key(key))
    }

    /// The token proving `identity`. The same key always gives the same token.
    pub fn issue(&self, identity: &SpiffeId) -> String {
        let id = identity.to_string();
        let tag = hmac::sign(&self.key, id.as_bytes());
        let mut token = String::with_capacity(PREFIX.len() + id.len() + 1 + 2 * tag.as_ref().len());
        token.push_str(PREFIX);
        token.push_str(&id);
        token.push('.');
        for b in tag.as_ref() {
            token.push(char::from(HEX[usize::from(b >> 4)]));
            token.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        token
    }

    /// The identity `token` proves, if its MAC verifies under this key.
    pub fn verify(&self, token: &str) -> Option<SpiffeId> {
        // Token files often end in a newline.
        let body = token.trim_ascii().strip_prefix(PREFIX)?;
        let (id, mac_hex) = body.rsplit_once('.')?;
        let mac = decode_hex(mac_hex)?;
        // ring compares in constant time.
        hmac::verify(&self.key, id.as_bytes(), &mac).ok()?;
        id.parse().ok()
    }

    fn check(&self, token: &str, claimed: &SpiffeId) -> Result<(), AuthError> {
        if token.trim_ascii().is_empty() {
            return Err(AuthError::MissingToken);
        }
        match self.verify(token) {
            Some(actual) if actual == *claimed => Ok(()),
            Some(actual) => Err(AuthError::IdentityMismatch {
                claimed: Box::new(claimed.clone()),
                actual: Box::new(actual),
            }),
            None => Err(AuthError::InvalidToken(claimed.clone())),
        }
    }
}

impl Authenticator for LocalTokens {
    async fn authenticate(&self, token: &str, claimed: &SpiffeId) -> Result<(), AuthError> {
        self.check(token, claimed)
    }
}

/// The local token of `id` under the key in `ca_dir` (created there if the directory has
/// none yet, exactly as `weft control` would on its first start).
pub fn token_for(ca_dir: &Path, id: &SpiffeId) -> Result<String, TokenKeyError> {
    Ok(LocalTokens::load_or_generate(ca_dir)?.issue(id))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes.chunks_exact(2).map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?)).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn id(ns: &str, sa: &str) -> SpiffeId {
        SpiffeId::new("cluster.local", ns, sa).unwrap()
    }

    #[tokio::test]
    async fn token_authenticates_its_own_identity_only() {
        let store = LocalTokens::new();
        let cart = id("shop", "cart");
        let token = store.issue(&cart);
        assert!(token.starts_with("weft1.spiffe://cluster.local/ns/shop/sa/cart."), "{token}");
        assert_eq!(store.authenticate(&token, &cart).await, Ok(()));
        assert_eq!(store.authenticate(&format!("{token}\n"), &cart).await, Ok(()));
        let payments = id("shop", "payments");
        assert_eq!(
            store.authenticate(&token, &payments).await,
            Err(AuthError::IdentityMismatch { claimed: Box::new(payments), actual: Box::new(cart.clone()) })
        );
        assert_eq!(store.issue(&cart), token, "same key, same token");
    }

    #[tokio::test]
    async fn wrong_empty_tampered_and_foreign_key_tokens_are_refused() {
        let store = LocalTokens::new();
        let cart = id("shop", "cart");
        let invalid = Err(AuthError::InvalidToken(cart.clone()));
        assert_eq!(store.authenticate("", &cart).await, Err(AuthError::MissingToken));
        assert_eq!(store.authenticate("weft.00", &cart).await, invalid);
        let token = store.issue(&cart);

        // A flipped MAC digit, a truncated MAC, upper-case hex, a swapped identity.
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(store.authenticate(&String::from_utf8(flipped).unwrap(), &cart).await, invalid);
        assert_eq!(store.authenticate(&token[..token.len() - 2], &cart).await, invalid);
        assert_eq!(store.authenticate(&token.to_uppercase(), &cart).await, invalid);
        let (_, mac) = token.rsplit_once('.').unwrap();
        let forged = format!("weft1.spiffe://cluster.local/ns/shop/sa/payments.{mac}");
        let payments = id("shop", "payments");
        assert_eq!(store.authenticate(&forged, &payments).await, Err(AuthError::InvalidToken(payments)));

        // The same identity's token under another key.
        let other = LocalTokens::new().issue(&cart);
        assert_eq!(store.authenticate(&other, &cart).await, invalid);
    }

    #[test]
    fn key_is_created_once_with_mode_0600_and_shared_by_token_for() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let cart = id("shop", "cart");
        let first = token_for(&ca_dir, &cart).unwrap();
        let key_path = ca_dir.join(TOKEN_KEY_FILE);
        assert_eq!(fs::metadata(&key_path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&key_path).unwrap().len(), 32);
        let store = LocalTokens::load_or_generate(&ca_dir).unwrap();
        assert_eq!(store.issue(&cart), first);
        assert_eq!(store.verify(&first), Some(cart));
    }

    #[test]
    fn a_key_file_of_the_wrong_length_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(TOKEN_KEY_FILE), b"short").unwrap();
        let err = LocalTokens::load_or_generate(dir.path()).unwrap_err();
        assert!(matches!(err, TokenKeyError::BadLength { len: 5, .. }), "{err}");
    }

    #[test]
    fn hex_decoding_accepts_lower_case_pairs_only() {
        assert_eq!(decode_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex("0g"), None);
        assert_eq!(decode_hex("FF"), None);
    }
}
