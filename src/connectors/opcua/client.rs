//! Opening sessions: ironlake's application instance certificate (created
//! in the certificate store on first start), endpoint discovery, the
//! security policy and mode asked for, and the user identity.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use opcua::client::{Client, ClientBuilder, IdentityToken, Session, SessionPollResult};
use opcua::crypto::SecurityPolicy;
use opcua::types::{EndpointDescription, MessageSecurityMode, StatusCode, UserTokenType};

use super::config::{Identity, Mode, Policy};

/// How ironlake presents itself as an OPC UA client.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Certificate store: `own/cert.der`, `private/private.pem`, `trusted/`, `rejected/`.
    pub pki_dir: PathBuf,
    pub application_name: String,
    pub application_uri: String,
    /// Trust unknown server certificates (commissioning only).
    pub trust_server_certs: bool,
}

impl ClientSettings {
    /// Settings with ironlake's names and a certificate store at `pki_dir`.
    pub fn new(pki_dir: impl Into<PathBuf>) -> ClientSettings {
        let host = hostname();
        ClientSettings {
            pki_dir: pki_dir.into(),
            application_name: "ironlake".into(),
            application_uri: format!("urn:ironlake:{host}"),
            trust_server_certs: false,
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// One server endpoint as asked for.
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    pub url: String,
    pub policy: Policy,
    pub mode: Mode,
    pub identity: Identity,
    pub timeout_ms: u64,
}

fn policy(p: Policy) -> SecurityPolicy {
    match p {
        Policy::None => SecurityPolicy::None,
        Policy::Basic256Sha256 => SecurityPolicy::Basic256Sha256,
        Policy::Aes128Sha256RsaOaep => SecurityPolicy::Aes128Sha256RsaOaep,
        Policy::Aes256Sha256RsaPss => SecurityPolicy::Aes256Sha256RsaPss,
    }
}

fn mode(m: Mode) -> MessageSecurityMode {
    match m {
        Mode::None => MessageSecurityMode::None,
        Mode::Sign => MessageSecurityMode::Sign,
        Mode::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
    }
}

/// The identity token of a configured identity.
pub fn identity_token(id: &Identity, base: &Path) -> Result<IdentityToken, String> {
    if let Some(user) = &id.user {
        let password = match (&id.password, &id.password_env) {
            (Some(p), _) => p.clone(),
            (None, Some(var)) => std::env::var(var)
                .map_err(|_| format!("the password variable `{var}` is not set"))?,
            (None, None) => {
                return Err(format!("user `{user}` has no `password` or `password_env`"))
            }
        };
        return Ok(IdentityToken::new_user_name(user.clone(), password));
    }
    match (&id.cert, &id.key) {
        (Some(c), Some(k)) => IdentityToken::new_x509_path(base.join(c), base.join(k))
            .map_err(|e| format!("the user certificate {c} / key {k}: {e}")),
        (None, None) => Ok(IdentityToken::Anonymous),
        _ => Err("an X.509 identity needs both `cert` and `key`".into()),
    }
}

fn token_type(t: &IdentityToken) -> UserTokenType {
    match t {
        IdentityToken::Anonymous => UserTokenType::Anonymous,
        IdentityToken::UserName(..) => UserTokenType::UserName,
        IdentityToken::X509(..) => UserTokenType::Certificate,
        IdentityToken::IssuedToken(_) => UserTokenType::IssuedToken,
    }
}

/// A live session and the stream that drives it (must be polled: it
/// connects, keeps alive, publishes, and reconnects with reactivation or a
/// new session, recreating subscriptions).
pub type SessionEvents = BoxStream<'static, Result<SessionPollResult, StatusCode>>;

/// Where the certificate store at `pki_dir` keeps its own certificate and
/// private key (the library's layout).
pub fn own_pair_paths(pki_dir: &Path) -> (PathBuf, PathBuf) {
    let store = opcua::crypto::CertificateStore::new(pki_dir);
    (store.own_certificate_path(), store.own_private_key_path())
}

/// Client construction reads ironlake's certificate and key, creating both
/// when neither exists. The library checks and writes without a lock, so two
/// connectors starting together (one per server) could each generate a pair:
/// the loser then runs without a certificate, or the store ends up with one's
/// certificate and the other's key, and every secure session fails. One
/// process-wide lock makes the first construction create the pair and every
/// other one read it.
static CLIENT_BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A client for `settings`, its certificate pair created on first start
/// whatever the security asked for: servers that want one get it, and it is
/// there to be handed to a server's administrator. Blocking (RSA key
/// generation takes seconds): call it off the async workers.
pub fn build_client(settings: &ClientSettings, timeout: Duration) -> Result<Client, String> {
    let _one_at_a_time = CLIENT_BUILD.lock().unwrap_or_else(|p| p.into_inner());
    std::fs::create_dir_all(&settings.pki_dir)
        .map_err(|e| format!("creating {}: {e}", settings.pki_dir.display()))?;
    let (cert, key) = own_pair_paths(&settings.pki_dir);
    match (cert.exists(), key.exists()) {
        (true, false) => {
            return Err(format!(
                "{} exists but its private key {} does not: restore the key, or delete the certificate so that a new pair is created (servers must then trust the new certificate)",
                cert.display(),
                key.display()
            ))
        }
        (false, true) => {
            return Err(format!(
                "{} exists but its certificate {} does not: restore the certificate, or delete the key so that a new pair is created (servers must then trust the new certificate)",
                key.display(),
                cert.display()
            ))
        }
        _ => {}
    }
    let client = ClientBuilder::new()
        .application_name(settings.application_name.clone())
        .application_uri(settings.application_uri.clone())
        .product_uri("urn:ironlake")
        .pki_dir(settings.pki_dir.clone())
        .create_sample_keypair(true)
        .trust_server_certs(settings.trust_server_certs)
        .session_retry_limit(-1)
        .session_retry_initial(Duration::from_millis(250))
        .session_retry_max(Duration::from_secs(10))
        .request_timeout(timeout)
        .keep_alive_interval(Duration::from_secs(2))
        .max_failed_keep_alive_count(3)
        .session_timeout(60_000)
        .recreate_subscriptions(true)
        // A publish of a busy subscription carries many thousand
        // notifications: the library's default limit (1000 per array)
        // would drop the connection.
        .max_array_length(1 << 20)
        .max_message_size(64 << 20)
        .max_chunk_count(4096)
        .client()
        .map_err(|e| format!("client settings: {}", e.join("; ")))?;
    // The library only logs a pair it could not read or write; a client
    // without one would retry its secure sessions forever.
    let store = client.certificate_store().read();
    store
        .read_own_cert()
        .and_then(|_| store.read_own_pkey())
        .map_err(|e| {
            format!(
                "ironlake's OPC UA certificate in {}: {e}",
                settings.pki_dir.display()
            )
        })?;
    drop(store);
    Ok(client)
}

/// Discover the server's endpoints, pick the one asked for and open a
/// session on it. Errors say what the server offers.
pub async fn connect(
    settings: &ClientSettings,
    ep: &EndpointSpec,
) -> Result<(Arc<Session>, SessionEvents), String> {
    let timeout = Duration::from_millis(ep.timeout_ms.max(100));
    let s = settings.clone();
    let client = tokio::task::spawn_blocking(move || build_client(&s, timeout))
        .await
        .map_err(|e| format!("creating the OPC UA client: {e}"))??;
    let endpoints = tokio::time::timeout(
        timeout,
        client.get_server_endpoints_from_url(ep.url.as_str()),
    )
    .await
    .map_err(|_| format!("{}: no answer to GetEndpoints within {timeout:?}", ep.url))?
    .map_err(|e| format!("{}: cannot discover endpoints: {e}", ep.url))?;
    let want_policy = policy(ep.policy);
    let want_mode = mode(ep.mode);
    let token = identity_token(&ep.identity, Path::new("."))?;
    let found = endpoints.iter().find(|e| {
        e.security_mode == want_mode
            && SecurityPolicy::from_uri(e.security_policy_uri.as_ref()) == want_policy
    });
    let Some(found) = found else {
        return Err(format!(
            "{}: the server offers no endpoint with security {}/{} (it offers: {})",
            ep.url,
            ep.policy.name(),
            ep.mode.name(),
            offered(&endpoints)
        ));
    };
    let tt = token_type(&token);
    let accepts = found
        .user_identity_tokens
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|p| p.token_type == tt);
    if !accepts {
        return Err(format!(
            "{}: the endpoint {}/{} does not accept {:?} identities",
            ep.url,
            ep.policy.name(),
            ep.mode.name(),
            tt
        ));
    }
    let desc: EndpointDescription = (ep.url.as_str(), want_policy.to_uri(), want_mode).into();
    let store = client.certificate_store().clone();
    let (session, event_loop) = client
        .session_builder()
        .with_endpoints(endpoints.clone())
        .connect_to_matching_endpoint(desc)
        .map_err(|e| format!("{}: {e}", ep.url))?
        .user_identity_token(token)
        .build(store)
        .map_err(|e| format!("{}: {e}", ep.url))?;
    Ok((session, event_loop.enter().boxed()))
}

/// The events of a running session's loop, as they happen.
pub type EventRx = tokio::sync::mpsc::UnboundedReceiver<Result<SessionPollResult, StatusCode>>;

/// Drive a session's event loop on a task of its own (requests such as
/// browse and subscribe need it polled); its events arrive on the receiver,
/// which ends after the loop does.
pub fn pump(mut events: SessionEvents) -> (tokio::task::JoinHandle<()>, EventRx) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            let end = ev.is_err();
            if tx.send(ev).is_err() || end {
                break;
            }
        }
    });
    (task, rx)
}

/// The endpoints a server offers, as `Policy/Mode` names.
pub fn offered(endpoints: &[EndpointDescription]) -> String {
    let mut v: Vec<String> = endpoints
        .iter()
        .map(|e| {
            let p = SecurityPolicy::from_uri(e.security_policy_uri.as_ref());
            format!("{}/{:?}", p.to_str(), e.security_mode)
        })
        .collect();
    v.sort();
    v.dedup();
    v.join(", ")
}

/// Hint for a failed secure connection: where the server's certificate went.
/// What to do about a session that could not be opened with `code`.
pub fn hint(code: StatusCode, settings: &ClientSettings, ep: &EndpointSpec) -> Option<String> {
    if matches!(
        code,
        StatusCode::BadUserAccessDenied
            | StatusCode::BadIdentityTokenRejected
            | StatusCode::BadIdentityTokenInvalid
            | StatusCode::BadUserSignatureInvalid
    ) {
        let who = match (&ep.identity.user, &ep.identity.cert) {
            (Some(u), _) => format!("user `{u}`: check the user name and password"),
            (None, Some(c)) => format!(
                "user certificate {c}: the server must trust it (put it in its trusted user certificates)"
            ),
            _ => "anonymous access: give a user or a user certificate (`identity`)".to_string(),
        };
        return Some(format!("the server refused the identity ({who})"));
    }
    (ep.policy != Policy::None).then(|| trust_hint(settings))
}

pub fn trust_hint(settings: &ClientSettings) -> String {
    format!(
        "if the server's certificate is not trusted yet, move it from {0}/rejected to {0}/trusted (or set opcua.trust_server_certs = true while commissioning); the server must also trust ironlake's certificate {0}/own/cert.der",
        settings.pki_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connectors for several servers start together on a store with no
    /// certificate yet (the first start of a plant with two cells): each must
    /// get the one pair on disk, and that pair must be a pair.
    #[test]
    fn clients_built_together_share_one_matching_certificate_pair() {
        let dir = tempfile::tempdir().unwrap();
        let settings = ClientSettings::new(dir.path().join("pki"));
        let thumbprints: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let c = build_client(&settings, Duration::from_secs(1)).unwrap();
                        let cert = c.certificate_store().read().read_own_cert().unwrap();
                        cert.thumbprint().as_hex_string()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            thumbprints.windows(2).all(|w| w[0] == w[1]),
            "{thumbprints:?}"
        );
        let (cert_path, key_path) = own_pair_paths(&settings.pki_dir);
        let cert = opcua::crypto::CertificateStore::read_cert(&cert_path).unwrap();
        let key = opcua::crypto::CertificateStore::read_pkey(&key_path).unwrap();
        assert_eq!(cert.thumbprint().as_hex_string(), thumbprints[0]);
        let data = b"the key signs what the certificate verifies";
        let mut sig = vec![0u8; opcua::crypto::KeySize::size(&key)];
        let n = key.sign_sha256(data, &mut sig).unwrap();
        assert!(cert
            .public_key()
            .unwrap()
            .verify_sha256(data, &sig[..n])
            .unwrap());
    }

    /// A store left with a certificate and no key (a crash between the two
    /// writes, a key deleted by hand) is reported, not papered over with a
    /// client that cannot sign.
    #[test]
    fn a_certificate_without_its_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let settings = ClientSettings::new(dir.path().join("pki"));
        build_client(&settings, Duration::from_secs(1)).unwrap();
        std::fs::remove_file(own_pair_paths(&settings.pki_dir).1).unwrap();
        let e = build_client(&settings, Duration::from_secs(1))
            .err()
            .expect("a half pair must not build");
        assert!(e.contains("private.pem") && e.contains("delete"), "{e}");
    }
}
