//! The cluster secret: a token shared by every process of one cluster, which every
//! node-to-node and admin request carries (`Authorization: Bearer <secret>`) and every server
//! checks before it reads a request body or changes anything.
//!
//! What it guarantees: with a secret configured, a caller that does not know it cannot read or
//! write records behind the frontends' back, register or impersonate nodes, fence them, or run
//! admin commands; it gets 401 and nothing changes. The comparison takes the same time whatever
//! the bytes given (both sides are hashed first, so not even the length leaks). The secret is
//! never logged and never appears in `Debug` output or `--help` (configurations hold only the
//! file's path). What it does not do: encrypt. The secret and the data cross the network in
//! clear text, so the cluster's ports belong on a private network (or behind TLS terminated
//! next to each node).
//!
//! Without a secret every endpoint is open, as in the original design; each process says so
//! once in its log at startup.

use http::{HeaderMap, HeaderValue};
use sha1::{Digest, Sha1};
use std::path::Path;
use subtle::ConstantTimeEq;

/// Fewest bytes a secret may have: a guessable secret protects nothing.
pub const MIN_SECRET_BYTES: usize = 16;
/// Most bytes a secret may have (it travels in a header).
pub const MAX_SECRET_BYTES: usize = 1024;

/// A cluster secret, read from a file.
#[derive(Clone)]
pub struct ClusterSecret {
    /// The `Authorization` header value callers send, marked sensitive.
    header: HeaderValue,
    /// The digest of that header value, which arriving headers are compared with.
    digest: [u8; 20],
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

/// Why a secret file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the cluster secret file {path}: {error}")]
    Unreadable { path: String, error: std::io::Error },
    #[error(
        "the cluster secret in {path} is {len} bytes; it must have {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} \
         (try: head -c 32 /dev/urandom | base64 > {path})"
    )]
    Length { path: String, len: usize },
    #[error("the cluster secret in {path} must be printable ASCII without spaces")]
    Characters { path: String },
}

impl ClusterSecret {
    /// Reads the secret from `path`: its contents with surrounding whitespace removed.
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let shown = path.display().to_string();
        let bytes =
            std::fs::read(path).map_err(|error| SecretError::Unreadable { path: shown.clone(), error })?;
        warn_if_readable_by_others(path);
        Self::parse(bytes.trim_ascii()).map_err(|e| match e {
            SecretError::Length { len, .. } => SecretError::Length { path: shown, len },
            _ => SecretError::Characters { path: shown },
        })
    }

    /// A secret from its bytes.
    pub fn parse(secret: &[u8]) -> Result<Self, SecretError> {
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&secret.len()) {
            return Err(SecretError::Length { path: String::new(), len: secret.len() });
        }
        if !secret.iter().all(u8::is_ascii_graphic) {
            return Err(SecretError::Characters { path: String::new() });
        }
        let mut value = b"Bearer ".to_vec();
        value.extend_from_slice(secret);
        let digest = Sha1::digest(&value).into();
        let mut header = HeaderValue::from_bytes(&value).expect("printable ASCII is a valid header value");
        header.set_sensitive(true);
        Ok(Self { header, digest })
    }

    /// The `Authorization` header value that proves a caller knows the secret.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    /// Whether `headers` carry this secret.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers.get(http::header::AUTHORIZATION) else { return false };
        let given: [u8; 20] = Sha1::digest(given.as_bytes()).into();
        given.ct_eq(&self.digest).into()
    }
}

/// Warns when a secret file can be read by users other than its owner.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                log::warn!(
                    "the cluster secret file {} is readable by other users; chmod 600 it",
                    path.display()
                );
            }
        }
    }
}

/// The digest of a storage node's identity token (see `proto::StorageRegistration::token`), as
/// the controller keeps it: the token itself never leaves the node's data directory but in its
/// own registrations.
pub fn token_digest(token: &str) -> String {
    Sha1::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `token` is the one whose digest is `digest`, compared in constant time.
pub fn token_matches(digest: &str, token: &str) -> bool {
    token_digest(token).as_bytes().ct_eq(digest.as_bytes()).into()
}

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the public API, health checks and read-only operator views.
    Open,
    /// Only callers holding the cluster secret (when one is configured): node-to-node calls and
    /// admin commands.
    Cluster,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unauthorized {
    #[error(
        "this endpoint needs the cluster secret: start the caller with --cluster-secret-file \
         (or VF_CLUSTER_SECRET_FILE) naming the cluster's secret file"
    )]
    Missing,
    #[error("the cluster secret given does not match this node's; nothing was changed")]
    Wrong,
}

/// A server's check of its callers: the secret it requires, if any.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    secret: Option<ClusterSecret>,
}

impl Gate {
    pub fn new(secret: Option<ClusterSecret>) -> Self {
        Self { secret }
    }

    /// Whether a request with `headers` may call an endpoint of `access`.
    pub fn check(&self, access: Access, headers: &HeaderMap) -> Result<(), Unauthorized> {
        match (&self.secret, access) {
            (None, _) | (_, Access::Open) => Ok(()),
            (Some(secret), Access::Cluster) if secret.admits(headers) => Ok(()),
            (Some(_), Access::Cluster) if headers.contains_key(http::header::AUTHORIZATION) => {
                Err(Unauthorized::Wrong)
            }
            (Some(_), Access::Cluster) => Err(Unauthorized::Missing),
        }
    }
}

/// Loads the secret a process was configured with (`--cluster-secret-file`), or warns once that
/// the cluster is open to anyone who can reach its ports.
pub fn load(path: Option<&Path>, process: &str) -> Result<Option<ClusterSecret>, SecretError> {
    match path {
        Some(path) => ClusterSecret::from_file(path).map(Some),
        None => {
            log::warn!(
                "{process} runs without a cluster secret: anyone who can reach the cluster's ports can \
                 read and write records directly, register nodes and run admin commands; \
                 give every process --cluster-secret-file (see docs/security.md)"
            );
            Ok(None)
        }
    }
}

/// The 401 answer for `refusal`.
pub fn unauthorized(refusal: Unauthorized) -> http::Response<crate::http::Body> {
    let mut response = crate::http::text(http::StatusCode::UNAUTHORIZED, refusal);
    response.headers_mut().insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(http::header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn only_the_right_secret_passes_a_closed_gate() {
        let secret = ClusterSecret::parse(b"0123456789abcdefXYZ").unwrap();
        let gate = Gate::new(Some(secret.clone()));
        let right = headers(Some("Bearer 0123456789abcdefXYZ"));
        let cases = [
            (Access::Cluster, headers(None), Err(Unauthorized::Missing)),
            (Access::Cluster, headers(Some("Bearer 0123456789abcdefXY")), Err(Unauthorized::Wrong)),
            (Access::Cluster, headers(Some("Bearer 0123456789abcdefXYZ ")), Err(Unauthorized::Wrong)),
            (Access::Cluster, headers(Some("0123456789abcdefXYZ")), Err(Unauthorized::Wrong)),
            (Access::Cluster, headers(Some("Basic 0123456789abcdefXYZ")), Err(Unauthorized::Wrong)),
            (Access::Cluster, right.clone(), Ok(())),
            (Access::Open, headers(None), Ok(())),
        ];
        for (access, given, expected) in cases {
            assert_eq!(gate.check(access, &given), expected, "{given:?}");
        }
        let mut sent = HeaderMap::new();
        sent.insert(http::header::AUTHORIZATION, secret.header().clone());
        assert_eq!(gate.check(Access::Cluster, &sent), Ok(()), "what a client sends passes");
        assert_eq!(Gate::default().check(Access::Cluster, &headers(None)), Ok(()), "no secret: open");
    }

    #[test]
    fn secrets_are_checked_and_never_shown() {
        assert!(matches!(ClusterSecret::parse(b"short"), Err(SecretError::Length { len: 5, .. })));
        assert!(matches!(ClusterSecret::parse(&[b'a'; 1025]), Err(SecretError::Length { .. })));
        assert!(matches!(ClusterSecret::parse(b"with a space in it"), Err(SecretError::Characters { .. })));
        let secret = ClusterSecret::parse(b"s3cr3t-s3cr3t-s3cr3t").unwrap();
        assert!(!format!("{secret:?}").contains("s3cr3t"));
        assert!(!format!("{:?}", secret.header()).contains("s3cr3t"), "sensitive header values are hidden");
        assert!(!format!("{:?}", Gate::new(Some(secret))).contains("s3cr3t"));
    }

    #[test]
    fn tokens_match_only_their_digest() {
        let digest = token_digest("0f1e2d3c4b5a69788796a5b4c3d2e1f0");
        assert_eq!(digest.len(), 40);
        assert!(token_matches(&digest, "0f1e2d3c4b5a69788796a5b4c3d2e1f0"));
        assert!(!token_matches(&digest, "0f1e2d3c4b5a69788796a5b4c3d2e1f1"));
        assert!(!token_matches(&digest, ""));
    }

    #[test]
    fn a_secret_file_is_trimmed_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "  abcdefghijklmnopqrstuvwxyz\n").unwrap();
        let secret = ClusterSecret::from_file(&path).unwrap();
        assert!(secret.admits(&headers(Some("Bearer abcdefghijklmnopqrstuvwxyz"))));
        std::fs::write(&path, "tiny\n").unwrap();
        let error = ClusterSecret::from_file(&path).unwrap_err().to_string();
        assert!(error.contains(&path.display().to_string()) && error.contains("4 bytes"), "{error}");
        let missing = ClusterSecret::from_file(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(missing.contains("cannot read"), "{missing}");
    }
}
