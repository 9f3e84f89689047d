//! A simulated cell's OPC UA server (async-opcua): one server per endpoint
//! of the scenario's OPC UA machines, with an object per machine under
//! `/Objects/Machines` following OPC 40001's shape: `Identification`
//! (manufacturer, model, serial number, year of construction),
//! `MachineryBuildingBlocks/MachineryItemState/CurrentState` (text and
//! `Number`: 0 NotAvailable, 1 OutOfService, 2 Executing, 3 NotExecuting)
//! and `MachineryOperationMode/CurrentState` (0 None, 1 Maintenance,
//! 2 Setup, 3 Processing), plus a variable per signal at its binding's
//! path. Values change every simulator tick, with the tick's time as their
//! source timestamp.
//!
//! Security: the endpoints None, Basic256Sha256 (Sign, SignAndEncrypt) and
//! Aes128_Sha256_RsaOaep (SignAndEncrypt); its certificate is created in
//! its own certificate store, client certificates are trusted (a
//! commissioning stand-in). Identities: anonymous and the user
//! `operator` / `operator`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use opcua::crypto::SecurityPolicy;
use opcua::nodes::{AccessLevel, ObjectBuilder, VariableBuilder};
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{simple_node_manager, SimpleNodeManager};
use opcua::server::{ServerBuilder, ServerHandle, ServerUserToken, ANONYMOUS_USER_TOKEN_ID};
use opcua::types::{
    DataTypeId, DataValue, DateTime, LocalizedText, MessageSecurityMode, NodeId, ObjectId,
    ObjectTypeId, VariableTypeId, Variant,
};

use crate::assets::{Asset, MachineState, SignalKind};

/// The simulator's user for user/password identities.
pub const SIM_USER: (&str, &str) = ("operator", "operator");

/// One machine's variables on a cell server.
#[derive(Debug)]
struct MachineNodes {
    signals: Vec<Option<(NodeId, SignalKind)>>,
    state_text: NodeId,
    state_number: NodeId,
    mode_text: NodeId,
    mode_number: NodeId,
}

/// A running cell server.
pub struct CellServer {
    handle: ServerHandle,
    nm: Arc<SimpleNodeManager>,
    machines: Vec<MachineNodes>,
    task: tokio::task::JoinHandle<()>,
    pub url: String,
}

/// A machine to serve: the asset, its object's browse path from
/// `/Objects`, and each bound signal's path under the object.
pub struct ServedMachine<'a> {
    pub asset: &'a Asset,
    pub object_path: Vec<String>,
    pub signals: Vec<(usize, Vec<String>)>,
}

fn item_state(st: MachineState) -> (&'static str, u32) {
    match st {
        MachineState::Running => ("Executing", 2),
        MachineState::Idle | MachineState::Setup => ("NotExecuting", 3),
        MachineState::Down => ("OutOfService", 1),
        MachineState::Unknown | MachineState::Disconnected => ("NotAvailable", 0),
    }
}

fn operation_mode(st: MachineState) -> (&'static str, u32) {
    match st {
        MachineState::Setup => ("Setup", 2),
        MachineState::Down => ("Maintenance", 1),
        MachineState::Running | MachineState::Idle => ("Processing", 3),
        MachineState::Unknown | MachineState::Disconnected => ("None", 0),
    }
}

fn value_of(kind: SignalKind, v: f64) -> Variant {
    match kind {
        SignalKind::Float => Variant::Double(v),
        SignalKind::Int => Variant::Int32(v.round() as i32),
        SignalKind::Bool => Variant::Boolean(v != 0.0),
        SignalKind::Counter => Variant::UInt32(v.max(0.0).round() as u32),
    }
}

fn data_type(kind: SignalKind) -> DataTypeId {
    match kind {
        SignalKind::Float => DataTypeId::Double,
        SignalKind::Int => DataTypeId::Int32,
        SignalKind::Bool => DataTypeId::Boolean,
        SignalKind::Counter => DataTypeId::UInt32,
    }
}

/// A certificate store kept from an earlier start may hold the certificate
/// of another cell (the store is named by port) or another address: clients
/// check a server certificate's application URI and host names, so they
/// would refuse every secure session. The simulator's pair is disposable:
/// a stale one is removed here and the server creates a new one.
fn drop_stale_certificate(pki_dir: &Path, app_uri: &str, host: &str) {
    let (cert, key) = crate::connectors::opcua::client::own_pair_paths(pki_dir);
    let fits = match opcua::crypto::CertificateStore::read_cert(&cert) {
        Ok(c) => {
            key.exists()
                && c.is_application_uri_valid(app_uri).is_ok()
                && c.is_hostname_valid(host).is_ok()
        }
        Err(_) => !cert.exists() && !key.exists(),
    };
    if !fits {
        tracing::info!(pki = %pki_dir.display(), "simulated OPC UA cell: replacing a certificate made for another cell or address");
        let _ = std::fs::remove_file(&cert);
        let _ = std::fs::remove_file(&key);
    }
}

impl CellServer {
    /// Start a cell server on `addr` for `machines`; its certificate store is `pki_dir`.
    pub async fn start(
        addr: SocketAddr,
        cell: &str,
        machines: &[ServedMachine<'_>],
        pki_dir: &Path,
    ) -> std::io::Result<CellServer> {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("simulated OPC UA cell `{cell}` cannot listen on {addr}: {e}"),
            )
        })?;
        let url = format!("opc.tcp://{}:{}/", addr.ip(), addr.port());
        let ns_uri = format!("urn:ironlake:sim:{cell}");
        let app_uri = format!("urn:ironlake:sim:{cell}:server");
        drop_stale_certificate(pki_dir, &app_uri, &addr.ip().to_string());
        let users = [ANONYMOUS_USER_TOKEN_ID, "operator"];
        let ids: &[&str] = &users;
        let builder = ServerBuilder::new()
            .application_name(format!("ironlake simulated cell {cell}"))
            .application_uri(app_uri)
            .product_uri("urn:ironlake:sim")
            .host(addr.ip().to_string())
            .port(addr.port())
            .pki_dir(pki_dir)
            .create_sample_keypair(true)
            .trust_client_certs(true)
            .discovery_urls(vec![url.clone()])
            .add_user_token(
                "operator",
                ServerUserToken::user_pass(SIM_USER.0, SIM_USER.1),
            )
            .add_endpoint(
                "none",
                ("/", SecurityPolicy::None, MessageSecurityMode::None, ids),
            )
            .add_endpoint(
                "basic256sha256_sign",
                (
                    "/",
                    SecurityPolicy::Basic256Sha256,
                    MessageSecurityMode::Sign,
                    ids,
                ),
            )
            .add_endpoint(
                "basic256sha256_sign_encrypt",
                (
                    "/",
                    SecurityPolicy::Basic256Sha256,
                    MessageSecurityMode::SignAndEncrypt,
                    ids,
                ),
            )
            .add_endpoint(
                "aes128_sign_encrypt",
                (
                    "/",
                    SecurityPolicy::Aes128Sha256RsaOaep,
                    MessageSecurityMode::SignAndEncrypt,
                    ids,
                ),
            )
            .with_node_manager(simple_node_manager(
                NamespaceMetadata {
                    namespace_uri: ns_uri.clone(),
                    ..Default::default()
                },
                "ironlake-sim",
            ));
        // Publish responses of a busy cell are large.
        let mut builder = builder
            .max_message_size(64 << 20)
            .max_chunk_count(4096)
            .max_array_length(1 << 20);
        {
            // A cell serves thousands of items changing every tick.
            let l = &mut builder.limits_mut().subscriptions;
            l.max_monitored_items_per_sub = 100_000;
            l.max_monitored_item_queue_size = 100;
            l.max_queued_notifications = 1_000_000;
            l.min_sampling_interval_ms = 10.0;
            l.min_publishing_interval_ms = 20.0;
        }
        let (server, handle) = builder.build().map_err(std::io::Error::other)?;
        let nm = handle
            .node_managers()
            .get_of_type::<SimpleNodeManager>()
            .ok_or_else(|| std::io::Error::other("no node manager"))?;
        let ns = handle
            .get_namespace_index(&ns_uri)
            .ok_or_else(|| std::io::Error::other("namespace not registered"))?;
        let mut nodes = Vec::new();
        {
            let mut space = nm.address_space().write();
            let mut made: HashMap<String, NodeId> = HashMap::new();
            // An object per path prefix, created once.
            let mut object = |space: &mut opcua::server::address_space::AddressSpace,
                              parent: &NodeId,
                              key: &str,
                              name: &str,
                              folder: bool|
             -> NodeId {
                if let Some(n) = made.get(key) {
                    return n.clone();
                }
                let id = NodeId::new(ns, key.to_string());
                let b = ObjectBuilder::new(&id, name, name);
                let b = if folder {
                    b.is_folder().organized_by(parent.clone())
                } else {
                    b.has_type_definition(ObjectTypeId::BaseObjectType)
                        .component_of(parent.clone())
                };
                b.insert(&mut *space);
                made.insert(key.to_string(), id.clone());
                id
            };
            let variable = |space: &mut opcua::server::address_space::AddressSpace,
                            parent: &NodeId,
                            key: String,
                            name: &str,
                            dt: DataTypeId,
                            v: Variant,
                            property: bool|
             -> NodeId {
                let id = NodeId::new(ns, key);
                let b = VariableBuilder::new(&id, name, name)
                    .data_type(dt)
                    .value(v)
                    .access_level(AccessLevel::CURRENT_READ)
                    .user_access_level(AccessLevel::CURRENT_READ);
                let b = if property {
                    b.has_type_definition(VariableTypeId::PropertyType)
                        .property_of(parent.clone())
                } else {
                    b.has_type_definition(VariableTypeId::BaseDataVariableType)
                        .component_of(parent.clone())
                };
                b.insert(&mut *space);
                id
            };
            let objects: NodeId = ObjectId::ObjectsFolder.into();
            for m in machines {
                let mut parent = objects.clone();
                let mut key = String::new();
                for (i, seg) in m.object_path.iter().enumerate() {
                    key = if key.is_empty() {
                        seg.clone()
                    } else {
                        format!("{key}/{seg}")
                    };
                    let folder = i + 1 < m.object_path.len();
                    parent = object(&mut space, &parent, &key, seg, folder);
                }
                let mroot = parent.clone();
                let mkey = key.clone();
                // OPC 40001 identification.
                let ident = object(
                    &mut space,
                    &mroot,
                    &format!("{mkey}/Identification"),
                    "Identification",
                    false,
                );
                let twin = &m.asset.twin;
                let props: [(&str, Variant, DataTypeId); 5] = [
                    (
                        "Manufacturer",
                        LocalizedText::new("en", "ironlake simulated machines").into(),
                        DataTypeId::LocalizedText,
                    ),
                    (
                        "Model",
                        LocalizedText::new("en", &twin.name).into(),
                        DataTypeId::LocalizedText,
                    ),
                    (
                        "SerialNumber",
                        Variant::from(format!("SIM-{}", m.asset.id)),
                        DataTypeId::String,
                    ),
                    (
                        "ProductInstanceUri",
                        Variant::from(format!("urn:ironlake:sim:{}", m.asset.id)),
                        DataTypeId::String,
                    ),
                    (
                        "YearOfConstruction",
                        Variant::UInt16(2024),
                        DataTypeId::UInt16,
                    ),
                ];
                for (name, v, dt) in props {
                    variable(
                        &mut space,
                        &ident,
                        format!("{mkey}/Identification/{name}"),
                        name,
                        dt,
                        v,
                        true,
                    );
                }
                let bb = object(
                    &mut space,
                    &mroot,
                    &format!("{mkey}/MachineryBuildingBlocks"),
                    "MachineryBuildingBlocks",
                    false,
                );
                let mut state_machine = |name: &str| -> (NodeId, NodeId) {
                    let sm = object(&mut space, &bb, &format!("{mkey}/{name}"), name, false);
                    let text = variable(
                        &mut space,
                        &sm,
                        format!("{mkey}/{name}/CurrentState"),
                        "CurrentState",
                        DataTypeId::LocalizedText,
                        LocalizedText::new("en", "NotAvailable").into(),
                        false,
                    );
                    let number = variable(
                        &mut space,
                        &text,
                        format!("{mkey}/{name}/CurrentState/Number"),
                        "Number",
                        DataTypeId::UInt32,
                        Variant::UInt32(0),
                        true,
                    );
                    (text, number)
                };
                let (state_text, state_number) = state_machine("MachineryItemState");
                let (mode_text, mode_number) = state_machine("MachineryOperationMode");
                let mut signals = vec![None; twin.signals.len()];
                for (si, path) in &m.signals {
                    let def = &twin.signals[*si];
                    let mut p = mroot.clone();
                    let mut k = mkey.clone();
                    for seg in &path[..path.len().saturating_sub(1)] {
                        k = format!("{k}/{seg}");
                        p = object(&mut space, &p, &k, seg, false);
                    }
                    let Some(name) = path.last() else { continue };
                    let id = variable(
                        &mut space,
                        &p,
                        format!("{k}/{name}"),
                        name,
                        data_type(def.kind),
                        value_of(def.kind, 0.0),
                        false,
                    );
                    signals[*si] = Some((id, def.kind));
                }
                nodes.push(MachineNodes {
                    signals,
                    state_text,
                    state_number,
                    mode_text,
                    mode_number,
                });
            }
        }
        let task = tokio::spawn(async move {
            if let Err(e) = server.run_with(listener).await {
                tracing::warn!(error = %e, "simulated OPC UA server stopped");
            }
        });
        Ok(CellServer {
            handle,
            nm,
            machines: nodes,
            task,
            url,
        })
    }

    /// Publish one tick of machine `i`: its signal values and state.
    pub fn publish(&self, i: usize, values: &[f64], state: MachineState, ts_ms: i64) {
        let Some(m) = self.machines.get(i) else {
            return;
        };
        let ts = DateTime::from(
            chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ts_ms).unwrap_or_default(),
        );
        let dv = |v: Variant| DataValue {
            value: Some(v),
            status: None,
            source_timestamp: Some(ts),
            source_picoseconds: None,
            server_timestamp: Some(ts),
            server_picoseconds: None,
        };
        let mut updates: Vec<(&NodeId, Option<&opcua::types::NumericRange>, DataValue)> =
            Vec::with_capacity(values.len() + 4);
        for (slot, v) in m.signals.iter().zip(values) {
            if let Some((id, kind)) = slot {
                updates.push((id, None, dv(value_of(*kind, *v))));
            }
        }
        let (st, sn) = item_state(state);
        let (mt, mn) = operation_mode(state);
        updates.push((&m.state_text, None, dv(LocalizedText::new("en", st).into())));
        updates.push((&m.state_number, None, dv(Variant::UInt32(sn))));
        updates.push((&m.mode_text, None, dv(LocalizedText::new("en", mt).into())));
        updates.push((&m.mode_number, None, dv(Variant::UInt32(mn))));
        if let Err(e) = self
            .nm
            .set_values(self.handle.subscriptions(), updates.into_iter())
        {
            tracing::warn!(status = %e, "simulated OPC UA server: cannot set values");
        }
    }

    /// Stop the server (connections closed).
    pub async fn stop(self) {
        self.handle.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.task).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The certificate store outlives a cell: a cell started on the same
    /// store after another must serve a certificate with its own URI.
    #[tokio::test]
    async fn a_cell_replaces_the_certificate_another_cell_left() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let old = CellServer::start(addr, "old-cell", &[], &pki)
            .await
            .unwrap();
        old.stop().await;
        let uri = |cell: &str| format!("urn:ironlake:sim:{cell}:server");
        let cert = || {
            let (cert, _) = crate::connectors::opcua::client::own_pair_paths(&pki);
            opcua::crypto::CertificateStore::read_cert(&cert).unwrap()
        };
        assert!(cert().is_application_uri_valid(&uri("old-cell")).is_ok());
        let new = CellServer::start(addr, "new-cell", &[], &pki)
            .await
            .unwrap();
        let c = cert();
        assert!(c.is_application_uri_valid(&uri("new-cell")).is_ok());
        assert!(c.is_hostname_valid("127.0.0.1").is_ok());
        let thumb = c.thumbprint().as_hex_string();
        new.stop().await;
        // The same cell again keeps its pair (servers that trust it still do).
        let again = CellServer::start(addr, "new-cell", &[], &pki)
            .await
            .unwrap();
        assert_eq!(cert().thumbprint().as_hex_string(), thumb);
        again.stop().await;
    }
}
