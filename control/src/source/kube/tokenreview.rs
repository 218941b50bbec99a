//! Authenticating workloads with Kubernetes TokenReview.
//!
//! A pod's proxy presents its projected ServiceAccount token (audience `weft`). The control
//! plane asks the API server whether the token is valid for that audience and whom it
//! names, and accepts the certificate request only if that is the ServiceAccount of the
//! SPIFFE ID the proxy asks for: `system:serviceaccount:<ns>:<sa>` for
//! `spiffe://<td>/ns/<ns>/sa/<sa>`.

use std::time::Duration;

use ::kube::Api;
use ::kube::api::PostParams;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};

use crate::identity::{AuthError, Authenticator, LocalTokens, SpiffeId};

/// The audience weft's projected tokens are minted for.
pub const DEFAULT_AUDIENCE: &str = "weft";

/// How long a review may take unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks tokens with the API server's TokenReview.
#[derive(Clone)]
pub struct TokenReviewAuthenticator {
    client: ::kube::Client,
    audiences: Vec<String>,
    timeout: Duration,
}

impl std::fmt::Debug for TokenReviewAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewAuthenticator").field("audiences", &self.audiences).finish_non_exhaustive()
    }
}

impl TokenReviewAuthenticator {
    /// Reviews tokens for the `weft` audience.
    pub fn new(client: ::kube::Client) -> Self {
        Self::with_audiences(client, vec![DEFAULT_AUDIENCE.to_string()])
    }

    /// Reviews tokens for other audiences (a token must be valid for one of them).
    pub fn with_audiences(client: ::kube::Client, audiences: Vec<String>) -> Self {
        Self { client, audiences, timeout: DEFAULT_TIMEOUT }
    }

    /// How long a review may take (the client retries an overloaded API server) before the
    /// authenticator answers [`AuthError::Unavailable`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn review(&self, token: &str, claimed: &SpiffeId) -> Result<(), AuthError> {
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_string()), audiences: Some(self.audiences.clone()) },
            ..Default::default()
        };
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let answer = tokio::time::timeout(self.timeout, reviews.create(&PostParams::default(), &review))
            .await
            .map_err(|_| AuthError::Unavailable(format!("TokenReview: no answer within {:?}", self.timeout)))?
            .map_err(|e| AuthError::Unavailable(format!("TokenReview: {e}")))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            tracing::debug!(claimed = %claimed, error = ?status.error, "TokenReview refused the token");
            return Err(AuthError::InvalidToken(claimed.clone()));
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        let Some((namespace, account)) = service_account(&username) else {
            tracing::debug!(claimed = %claimed, %username, "token is not a ServiceAccount's");
            return Err(AuthError::InvalidToken(claimed.clone()));
        };
        if namespace == claimed.namespace() && account == claimed.service_account() {
            return Ok(());
        }
        let actual = SpiffeId::new(claimed.trust_domain(), namespace, account)
            .map_err(|_| AuthError::InvalidToken(claimed.clone()))?;
        Err(AuthError::IdentityMismatch { claimed: Box::new(claimed.clone()), actual: Box::new(actual) })
    }
}

/// `(namespace, name)` of a `system:serviceaccount:<ns>:<sa>` user name.
fn service_account(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some((namespace, name))
}

impl Authenticator for TokenReviewAuthenticator {
    fn authenticate(
        &self,
        token: &str,
        claimed: &SpiffeId,
    ) -> impl Future<Output = Result<(), AuthError>> + Send {
        self.review(token, claimed)
    }
}

/// The authenticator a control plane picks at startup: local tokens (manifest directory)
/// or TokenReview (Kubernetes).
#[derive(Debug, Clone)]
pub enum WorkloadAuthenticator {
    /// Tokens minted by the control plane's own key.
    Local(std::sync::Arc<LocalTokens>),
    /// Projected ServiceAccount tokens, checked by the API server.
    TokenReview(TokenReviewAuthenticator),
}

impl Authenticator for WorkloadAuthenticator {
    async fn authenticate(&self, token: &str, claimed: &SpiffeId) -> Result<(), AuthError> {
        match self {
            WorkloadAuthenticator::Local(local) => local.authenticate(token, claimed).await,
            WorkloadAuthenticator::TokenReview(review) => review.review(token, claimed).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_user_names_are_split_into_namespace_and_name() {
        assert_eq!(service_account("system:serviceaccount:pay:web"), Some(("pay", "web")));
        assert_eq!(service_account("system:serviceaccount:pay"), None);
        assert_eq!(service_account("system:serviceaccount::web"), None);
        assert_eq!(service_account("system:serviceaccount:pay:web:x"), None);
        assert_eq!(service_account("alice"), None);
        assert_eq!(service_account("system:node:n1"), None);
    }
}
