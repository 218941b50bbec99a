//! The CA Secret (`weft-ca` in `weft-system`): made once, shared by every control plane replica.
//!
//! Each replica calls [`load_or_create`] at start-up. If the Secret exists, its root certificate
//! and key are loaded. If not, the replica generates a root and *creates* the Secret; creation
//! is atomic in the API server, so when two replicas race, one gets `409 AlreadyExists`, drops
//! its own root and loads the winner's. Every replica thus signs with the same key and proxies
//! trust one root whichever replica they reach.
//!
//! The Secret has type `kubernetes.io/tls`: `tls.crt` is the root certificate, `tls.key` its
//! PKCS#8 key. Only the control plane's Role can read it (by name, in `weft-system`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::identity::ca::{ROOT_CERT_FILE, ROOT_KEY_FILE};
use crate::identity::{CaConfig, CaError, CertificateAuthority};

/// The certificate's key in the Secret.
pub const CERT_KEY: &str = "tls.crt";
/// The private key's key in the Secret.
pub const KEY_KEY: &str = "tls.key";

/// Why the CA could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum CaSecretError {
    /// The API server refused or could not be reached.
    #[error("the CA Secret {namespace}/{name}: {source}")]
    Api {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// What the client said.
        source: kube::Error,
    },
    /// The Secret exists but lacks a field, or holds something that is not PEM text.
    #[error("the CA Secret {namespace}/{name} has no usable `{field}`; delete it to have a new CA made")]
    Malformed {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The missing field.
        field: &'static str,
    },
    /// The certificate and key do not make a CA, or a new root could not be made.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The scratch directory for a new root could not be used.
    #[error("generating the CA in {path}: {source}")]
    Scratch {
        /// The directory.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Loads the CA from Secret `name` in `namespace`, or generates one and stores it there if there
/// is none; a replica that loses the creation race loads the winner's. `scratch` is an empty
/// directory the new root's files pass through (it is removed afterwards).
pub async fn load_or_create(
    client: Client,
    namespace: &str,
    name: &str,
    scratch: &Path,
    config: CaConfig,
) -> Result<CertificateAuthority, CaSecretError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let api_error =
        |source| CaSecretError::Api { namespace: namespace.to_string(), name: name.to_string(), source };
    if let Some(secret) = api.get_opt(name).await.map_err(api_error)? {
        tracing::info!(namespace, name, "loading the CA from its Secret");
        return from_secret(&secret, namespace, name, config);
    }

    let (cert_pem, key_pem) = generate(scratch, config.clone())?;
    let secret = to_secret(namespace, name, &cert_pem, &key_pem);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(namespace, name, "generated a CA and stored it in a new Secret");
            Ok(CertificateAuthority::from_pem(&cert_pem, &key_pem, config)?)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            // Another replica created it first: use theirs. It may take a moment to be readable.
            tracing::info!(namespace, name, "another replica created the CA Secret first; loading it");
            for attempt in 0..10u32 {
                if let Some(secret) = api.get_opt(name).await.map_err(api_error)? {
                    return from_secret(&secret, namespace, name, config);
                }
                tokio::time::sleep(Duration::from_millis(100) * (attempt + 1)).await;
            }
            Err(api_error(kube::Error::Api(status)))
        }
        Err(e) => Err(api_error(e)),
    }
}

/// Makes a root with the identity module's own code (through a directory, the only way it
/// hands out the key) and returns its certificate and key PEM. The directory is removed.
fn generate(scratch: &Path, config: CaConfig) -> Result<(String, String), CaSecretError> {
    let io = |source| CaSecretError::Scratch { path: scratch.display().to_string(), source };
    let dir = scratch.join(format!("weft-ca-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io)?;
    }
    CertificateAuthority::load_or_generate(&dir, config)?;
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).map_err(io);
    let pems = (read(ROOT_CERT_FILE)?, read(ROOT_KEY_FILE)?);
    std::fs::remove_dir_all(&dir).map_err(io)?;
    Ok(pems)
}

/// The Secret that stores a CA.
pub fn to_secret(namespace: &str, name: &str, cert_pem: &str, key_pem: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([("app.kubernetes.io/part-of".to_string(), "weft".to_string())])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(BTreeMap::from([
            (CERT_KEY.to_string(), ByteString(cert_pem.as_bytes().to_vec())),
            (KEY_KEY.to_string(), ByteString(key_pem.as_bytes().to_vec())),
        ])),
        ..Secret::default()
    }
}

/// The CA a Secret holds.
pub fn from_secret(
    secret: &Secret,
    namespace: &str,
    name: &str,
    config: CaConfig,
) -> Result<CertificateAuthority, CaSecretError> {
    let field = |field: &'static str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(field))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .ok_or(CaSecretError::Malformed {
                namespace: namespace.to_string(),
                name: name.to_string(),
                field,
            })
    };
    Ok(CertificateAuthority::from_pem(&field(CERT_KEY)?, &field(KEY_KEY)?, config)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::{Request, Response};
    use kube::client::Body;

    use super::*;

    /// A one-Secret API server: GET answers from `stored`, POST stores unless `race` says another
    /// replica got there first (then it stores the other replica's Secret and answers 409).
    #[derive(Clone)]
    struct FakeApi {
        stored: Arc<tokio::sync::Mutex<Option<Vec<u8>>>>,
        race: Option<Vec<u8>>,
        posts: Arc<AtomicUsize>,
    }

    impl FakeApi {
        fn client(&self) -> Client {
            let this = self.clone();
            let svc = tower::service_fn(move |req: Request<Body>| {
                let this = this.clone();
                async move { Ok::<_, std::convert::Infallible>(this.handle(req).await) }
            });
            Client::new(svc, "weft-system")
        }

        async fn handle(&self, req: Request<Body>) -> Response<Body> {
            let mut stored = self.stored.lock().await;
            let reply =
                |code: u16, body: Vec<u8>| Response::builder().status(code).body(Body::from(body)).unwrap();
            let status = |code: u16, reason: &str| {
                let body = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": reason, "code": code, "message": reason});
                reply(code, serde_json::to_vec(&body).unwrap())
            };
            match *req.method() {
                http::Method::GET => match stored.as_ref() {
                    Some(secret) => reply(200, secret.clone()),
                    None => status(404, "NotFound"),
                },
                http::Method::POST => {
                    self.posts.fetch_add(1, Ordering::SeqCst);
                    if let Some(theirs) = &self.race {
                        *stored = Some(theirs.clone());
                        return status(409, "AlreadyExists");
                    }
                    let body = http_body_util::BodyExt::collect(req.into_body()).await.unwrap().to_bytes();
                    *stored = Some(body.to_vec());
                    reply(201, body.to_vec())
                }
                _ => status(405, "MethodNotAllowed"),
            }
        }
    }

    fn fake(stored: Option<Vec<u8>>, race: Option<Vec<u8>>) -> FakeApi {
        FakeApi {
            stored: Arc::new(tokio::sync::Mutex::new(stored)),
            race,
            posts: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn other_replicas_secret() -> (String, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = generate(dir.path(), CaConfig::default()).unwrap();
        let secret = to_secret("weft-system", "weft-ca", &cert, &key);
        (cert, serde_json::to_vec(&secret).unwrap())
    }

    #[tokio::test]
    async fn the_first_replica_creates_the_secret_and_the_next_loads_the_same_root() {
        let api = fake(None, None);
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(api.client(), "weft-system", "weft-ca", dir.path(), CaConfig::default())
            .await
            .unwrap();
        assert_eq!(api.posts.load(Ordering::SeqCst), 1);
        let second = load_or_create(api.client(), "weft-system", "weft-ca", dir.path(), CaConfig::default())
            .await
            .unwrap();
        assert_eq!(api.posts.load(Ordering::SeqCst), 1, "the second replica must not create another CA");
        assert_eq!(first.root_pem(), second.root_pem());
        // Nothing of the key is left on disk.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_replica_that_loses_the_creation_race_uses_the_winners_root() {
        let (their_cert, their_secret) = other_replicas_secret();
        let api = fake(None, Some(their_secret));
        let dir = tempfile::tempdir().unwrap();
        let ca = load_or_create(api.client(), "weft-system", "weft-ca", dir.path(), CaConfig::default())
            .await
            .unwrap();
        assert_eq!(ca.root_pem(), their_cert);
    }

    #[tokio::test]
    async fn a_secret_without_its_key_is_a_clear_error() {
        let mut secret = to_secret("weft-system", "weft-ca", "x", "y");
        secret.data.as_mut().unwrap().remove(KEY_KEY);
        let api = fake(Some(serde_json::to_vec(&secret).unwrap()), None);
        let dir = tempfile::tempdir().unwrap();
        let e = load_or_create(api.client(), "weft-system", "weft-ca", dir.path(), CaConfig::default())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no usable `tls.key`"), "{e}");
    }
}
