//! OPC UA configuration as written: the platform's `[opcua]` section (the
//! client's certificate store, named servers with their security and
//! identity, namespace prefixes), a machine's `source` table
//! (`protocol = "opcua"`, its server and object, per-signal node
//! overrides) and a signal's binding (`opcua = { path = "..." }` or
//! `opcua = { node = "..." }` in a twin type).

use std::collections::BTreeMap;

use serde::Deserialize;

/// Message security policy of an endpoint, by its OPC UA name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Policy {
    #[default]
    None,
    Basic256Sha256,
    #[serde(rename = "Aes128_Sha256_RsaOaep", alias = "Aes128Sha256RsaOaep")]
    Aes128Sha256RsaOaep,
    #[serde(rename = "Aes256_Sha256_RsaPss", alias = "Aes256Sha256RsaPss")]
    Aes256Sha256RsaPss,
}

impl Policy {
    /// The policy's URI suffix (`http://opcfoundation.org/UA/SecurityPolicy#<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Policy::None => "None",
            Policy::Basic256Sha256 => "Basic256Sha256",
            Policy::Aes128Sha256RsaOaep => "Aes128_Sha256_RsaOaep",
            Policy::Aes256Sha256RsaPss => "Aes256_Sha256_RsaPss",
        }
    }

    /// Parse the name as written in configs and on the command line.
    pub fn parse(s: &str) -> Option<Policy> {
        let k: String = s
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        Some(match k.as_str() {
            "none" => Policy::None,
            "basic256sha256" => Policy::Basic256Sha256,
            "aes128sha256rsaoaep" => Policy::Aes128Sha256RsaOaep,
            "aes256sha256rsapss" => Policy::Aes256Sha256RsaPss,
            _ => return None,
        })
    }
}

/// Message security mode of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Mode {
    #[default]
    None,
    Sign,
    SignAndEncrypt,
}

impl Mode {
    /// The mode's OPC UA name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::None => "None",
            Mode::Sign => "Sign",
            Mode::SignAndEncrypt => "SignAndEncrypt",
        }
    }

    /// Parse the name as written in configs and on the command line.
    pub fn parse(s: &str) -> Option<Mode> {
        Some(
            match s.to_ascii_lowercase().replace(['_', '-'], "").as_str() {
                "none" => Mode::None,
                "sign" => Mode::Sign,
                "signandencrypt" => Mode::SignAndEncrypt,
                _ => return None,
            },
        )
    }
}

/// How ironlake identifies itself to a server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// User name (with `password` or `password_env`).
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Environment variable holding the password (kept out of the file).
    #[serde(default)]
    pub password_env: Option<String>,
    /// User certificate (DER) and private key (PEM) for an X.509 identity.
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
}

/// One OPC UA server ironlake connects to (one session, one subscription).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `opc.tcp://host:port[/path]`.
    pub endpoint: String,
    #[serde(default)]
    pub security_policy: Option<String>,
    #[serde(default)]
    pub security_mode: Option<String>,
    /// Anonymous when left out.
    #[serde(default)]
    pub identity: Identity,
    /// Publishing interval of the subscription.
    #[serde(default = "default_publishing")]
    pub publishing_ms: u64,
    /// Default sampling interval of monitored items (a binding may set its own).
    #[serde(default = "default_sampling")]
    pub sampling_ms: f64,
    /// Values a server keeps per monitored item between publishes.
    #[serde(default = "default_queue")]
    pub queue_size: u32,
    /// Request timeout.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Values per publish response at most (0: as many as the server
    /// sends); servers limit a message to a few hundred KB by default.
    #[serde(default = "default_max_notifications")]
    pub max_notifications_per_publish: u32,
    /// Machines whose twin type takes extra signals (`extra_signals =
    /// "add"`) have their object browsed this often for measurements no
    /// signal is bound to (a firmware update), which are then subscribed
    /// (0: only when the subscription is made).
    #[serde(default = "default_discover")]
    pub discover_s: u64,
}

fn default_discover() -> u64 {
    60
}

fn default_max_notifications() -> u32 {
    2000
}

fn default_publishing() -> u64 {
    100
}
fn default_sampling() -> f64 {
    100.0
}
fn default_queue() -> u32 {
    10
}
fn default_timeout() -> u64 {
    5000
}

/// The platform's `[opcua]` section.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OpcuaSection {
    /// Certificate store (`own/`, `private/`, `trusted/`, `rejected/`);
    /// relative to the platform file. Left out: `<journal_dir>/connectors/opcua/pki`.
    #[serde(default)]
    pub pki_dir: Option<String>,
    #[serde(default)]
    pub application_name: Option<String>,
    #[serde(default)]
    pub application_uri: Option<String>,
    /// Trust every server certificate (commissioning only); otherwise a
    /// server's certificate must be in `pki/trusted/` (an unknown one is
    /// written to `pki/rejected/` to be moved there).
    #[serde(default)]
    pub trust_server_certs: bool,
    /// Named servers machines refer to (`source.server`).
    #[serde(default)]
    pub servers: BTreeMap<String, ServerConfig>,
    /// Namespace prefixes for browse paths (`prefix:Name`), by URI.
    #[serde(default)]
    pub namespaces: BTreeMap<String, String>,
}

/// A machine's `source` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcuaSourceConfig {
    /// A server of `[opcua.servers]`...
    #[serde(default)]
    pub server: Option<String>,
    /// ...or an endpoint (security None, anonymous).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The machine's object: a browse path (`/Objects/Plant/Line1/Press3`)
    /// or a NodeId (`nsu=urn:x;s=Press3`). Relative signal paths start here.
    #[serde(default)]
    pub node: Option<String>,
    /// Per-signal overrides of the twin type's bindings: a NodeId or path.
    #[serde(default)]
    pub nodes: BTreeMap<String, String>,
}

/// A signal's binding: where its value is in the machine's object.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcuaBinding {
    /// Browse path, relative to the machine's node unless it starts with `/`.
    #[serde(default)]
    pub path: Option<String>,
    /// NodeId (`ns=2;s=...`, `nsu=URI;s=...`, `i=...`).
    #[serde(default)]
    pub node: Option<String>,
    /// Sampling interval of this signal (default: the server's `sampling_ms`).
    #[serde(default)]
    pub sampling_ms: Option<f64>,
}

impl OpcuaBinding {
    /// The address as written (a path or a NodeId).
    pub fn address(&self) -> Result<&str, String> {
        match (&self.path, &self.node) {
            (Some(p), None) => Ok(p),
            (None, Some(n)) => Ok(n),
            _ => Err("give exactly one of `path` (a browse path) or `node` (a NodeId)".into()),
        }
    }
}
