//! `ironlake opcua browse URL`: print a server's address space, or write a
//! twin type from a machine's object (`--node PATH --twin-type NAME`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use ironlake::assets::TwinType;
use ironlake::connectors::opcua::address::Address;
use ironlake::connectors::opcua::browse::{self, Browser};
use ironlake::connectors::opcua::client::{ClientSettings, EndpointSpec};
use ironlake::connectors::opcua::config::{Identity, Mode, Policy};

/// OPC UA commissioning commands.
#[derive(Subcommand, Debug)]
pub enum OpcuaOp {
    /// Print the address space as a tree (data types, access levels,
    /// values, NodeIds), or with `--twin-type` write a twin type from the
    /// machine object at `--node`.
    Browse(BrowseArgs),
}

/// Arguments of `opcua browse`.
#[derive(Args, Debug)]
pub struct BrowseArgs {
    /// Server endpoint, `opc.tcp://host:port[/path]`.
    pub url: String,
    /// Levels to print.
    #[arg(long, default_value_t = 3)]
    pub depth: usize,
    /// Where to start: a browse path (`/Objects/Plant/Press3`) or a NodeId
    /// (`nsu=URI;s=...`).
    #[arg(long, default_value = "/Objects")]
    pub node: String,
    /// Write a twin type of this kind from the machine object at `--node`.
    #[arg(long)]
    pub twin_type: Option<String>,
    /// Where to write the twin type (default: `twins/<NAME>.toml`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Overwrite `--out` if it exists.
    #[arg(long)]
    pub force: bool,
    /// Security policy: None, Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss.
    #[arg(long, default_value = "None")]
    pub security_policy: String,
    /// Security mode: None, Sign, SignAndEncrypt (default: SignAndEncrypt with a policy).
    #[arg(long)]
    pub security_mode: Option<String>,
    /// User name (password from `--password` or IRONLAKE_OPCUA_PASSWORD).
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub password: Option<String>,
    /// X.509 user identity: the user's certificate (DER), with `--user-key`.
    #[arg(long, conflicts_with = "user")]
    pub user_cert: Option<PathBuf>,
    /// The private key (PEM) of `--user-cert`.
    #[arg(long, requires = "user_cert")]
    pub user_key: Option<PathBuf>,
    /// Certificate store (ironlake's certificate is created here; the
    /// server's goes in `trusted/`). Default: `~/.ironlake/pki`.
    #[arg(long)]
    pub pki: Option<PathBuf>,
    /// Trust the server's certificate without it being in `trusted/`.
    #[arg(long)]
    pub trust: bool,
    /// Request timeout, ms.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
}

/// Run an `opcua` command.
pub async fn run(op: OpcuaOp) -> Result<()> {
    match op {
        OpcuaOp::Browse(a) => browse_cmd(a).await,
    }
}

async fn browse_cmd(a: BrowseArgs) -> Result<()> {
    let policy = Policy::parse(&a.security_policy).with_context(|| {
        format!(
            "unknown security policy `{}` (None, Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss)",
            a.security_policy
        )
    })?;
    let mode = match &a.security_mode {
        Some(m) => Mode::parse(m)
            .with_context(|| format!("unknown security mode `{m}` (None, Sign, SignAndEncrypt)"))?,
        None if policy == Policy::None => Mode::None,
        None => Mode::SignAndEncrypt,
    };
    let password = a
        .password
        .clone()
        .or_else(|| std::env::var("IRONLAKE_OPCUA_PASSWORD").ok());
    if a.user.is_some() && password.is_none() {
        bail!("--user needs --password or IRONLAKE_OPCUA_PASSWORD");
    }
    let pki = a.pki.clone().unwrap_or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(".ironlake/pki")
    });
    let mut settings = ClientSettings::new(pki);
    settings.trust_server_certs = a.trust;
    let ep = EndpointSpec {
        url: a.url.clone(),
        policy,
        mode,
        identity: Identity {
            user: a.user.clone(),
            password,
            cert: a.user_cert.as_ref().map(|p| p.display().to_string()),
            key: a.user_key.as_ref().map(|p| p.display().to_string()),
            ..Default::default()
        },
        timeout_ms: a.timeout_ms,
    };
    let start = Address::parse(&a.node, &BTreeMap::new()).map_err(anyhow::Error::msg)?;
    let b = Browser::open(&settings, &ep)
        .await
        .map_err(anyhow::Error::msg)?;
    let res = match &a.twin_type {
        None => browse::tree(&b.session, &start, a.depth)
            .await
            .map(|t| super::print_stdout(&t)),
        Some(kind) => match browse::twin_type(&b.session, &start, kind).await {
            Ok(g) => write_twin(&a, kind, &g),
            Err(e) => Err(e),
        },
    };
    b.close().await;
    res.map_err(anyhow::Error::msg)
}

fn write_twin(a: &BrowseArgs, kind: &str, g: &browse::Generated) -> Result<(), String> {
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("twins").join(format!("{kind}.toml")));
    // What is written must load as a twin type.
    TwinType::from_toml(&g.toml, &out.display().to_string())
        .map_err(|e| format!("the generated twin type does not load (a bug): {e}"))?;
    if out.exists() && !a.force {
        return Err(format!(
            "{} exists; give --force to overwrite it or --out FILE",
            out.display()
        ));
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    std::fs::write(&out, &g.toml).map_err(|e| format!("writing {}: {e}", out.display()))?;
    let mut msg = format!(
        "wrote {} ({} signals{})\nin the plant file, a machine of this type reads:\n  source = {{ protocol = \"opcua\", endpoint = \"{}\", node = \"{}\" }}\n",
        out.display(),
        g.signals,
        if g.recognised.is_empty() {
            String::new()
        } else {
            format!("; recognised {}", g.recognised.join(", "))
        },
        a.url,
        g.node
    );
    if a.security_policy != "None" || a.user.is_some() {
        msg.push_str("  (with security or a user: name a server of [opcua.servers] with `server = \"...\"` instead of `endpoint`)\n");
    }
    super::print_stdout(&msg);
    Ok(())
}
