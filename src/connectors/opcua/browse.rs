//! Commissioning: `ironlake opcua browse` prints a server's address space
//! as a tree (data types, access levels, NodeIds) and writes a twin type
//! from a machine's object, recognising the OPC UA companion
//! specifications a server follows:
//!
//! - OPC 40001 (Machinery): the `Identification` object (manufacturer,
//!   model, serial number go into the description), the machine's state
//!   (`MachineryItemState`, its `CurrentState` number: 0 NotAvailable,
//!   1 OutOfService, 2 Executing, 3 NotExecuting, mapped to UNKNOWN, DOWN,
//!   RUNNING, IDLE) and the operation mode (`MachineryOperationMode`).
//! - OPC 40501 (Machine Tools): `Monitoring` spindles and channels
//!   (rotation, overrides, channel state) and `Production` job counters.
//!
//! Names are matched in any namespace (servers that do not load the
//! companion nodesets still follow the names); every other numeric or
//! boolean variable becomes a signal, with its unit and range from the
//! `EngineeringUnits` and `EURange` properties where the server has them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use opcua::client::{Session, SessionPollResult};
use opcua::types::{
    AttributeId, DataValue, EUInformation, NodeClass, NodeId, Range, ReadValueId,
    TimestampsToReturn, Variant,
};

use super::address::{Address, Child, Resolver};
use super::client::{self, ClientSettings, EndpointSpec};

/// A session for commissioning commands, with its event loop running.
pub struct Browser {
    pub session: Arc<Session>,
    pump: tokio::task::JoinHandle<()>,
}

impl Browser {
    /// Connect and wait until the session is active (or say why not).
    pub async fn open(settings: &ClientSettings, ep: &EndpointSpec) -> Result<Browser, String> {
        let (session, events) = client::connect(settings, ep).await?;
        let (pump, mut rx) = client::pump(events);
        let deadline = Duration::from_millis(ep.timeout_ms.max(1000) * 2);
        let waited = tokio::time::timeout(deadline, async {
            loop {
                match rx.recv().await {
                    Some(Ok(SessionPollResult::Reconnected(_))) => return Ok(()),
                    Some(Ok(SessionPollResult::ReconnectFailed(code))) | Some(Err(code)) => {
                        let mut m = format!("{}: cannot open a session: {code}", ep.url);
                        if let Some(h) = client::hint(code, settings, ep) {
                            m.push_str("; ");
                            m.push_str(&h);
                        }
                        return Err(m);
                    }
                    Some(Ok(_)) => {}
                    None => return Err(format!("{}: the session ended", ep.url)),
                }
            }
        })
        .await;
        match waited {
            Ok(Ok(())) => {
                // Keep draining the events so the loop never blocks.
                tokio::spawn(async move { while rx.recv().await.is_some() {} });
                Ok(Browser { session, pump })
            }
            Ok(Err(e)) => {
                pump.abort();
                Err(e)
            }
            Err(_) => {
                pump.abort();
                Err(format!("{}: no session within {deadline:?}", ep.url))
            }
        }
    }

    /// Close the session.
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.session.disconnect()).await;
        self.pump.abort();
    }
}

/// Name of a built-in data type (namespace 0), or the NodeId.
fn type_name(id: &NodeId) -> String {
    if id.namespace == 0 {
        if let opcua::types::Identifier::Numeric(n) = id.identifier {
            let s = match n {
                1 => "Boolean",
                2 => "SByte",
                3 => "Byte",
                4 => "Int16",
                5 => "UInt16",
                6 => "Int32",
                7 => "UInt32",
                8 => "Int64",
                9 => "UInt64",
                10 => "Float",
                11 => "Double",
                12 => "String",
                13 => "DateTime",
                14 => "Guid",
                15 => "ByteString",
                17 => "NodeId",
                19 => "StatusCode",
                20 => "QualifiedName",
                21 => "LocalizedText",
                22 => "Structure",
                24 => "BaseDataType",
                26 => "Number",
                27 => "Integer",
                28 => "UInteger",
                29 => "Enumeration",
                290 => "Duration",
                294 => "UtcTime",
                884 => "Range",
                887 => "EUInformation",
                _ => "",
            };
            if !s.is_empty() {
                return s.to_string();
            }
        }
    }
    id.to_string()
}

/// What ironlake makes of a data type: a signal type, or none.
fn signal_kind(type_name: &str) -> Option<&'static str> {
    match type_name {
        "Boolean" => Some("bool"),
        "SByte" | "Byte" | "Int16" | "UInt16" | "Int32" | "UInt32" | "Int64" | "UInt64"
        | "Integer" | "UInteger" | "Enumeration" => Some("int"),
        "Float" | "Double" | "Number" | "Duration" => Some("float"),
        _ => None,
    }
}

fn access(level: u8) -> &'static str {
    match (level & 1 != 0, level & 2 != 0) {
        (true, true) => "rw",
        (true, false) => "r",
        (false, true) => "w",
        (false, false) => "-",
    }
}

/// Data type, access level and value of variables.
struct VarInfo {
    data_type: String,
    access: u8,
    value: Option<Variant>,
}

async fn read_vars(session: &Session, nodes: &[NodeId]) -> Result<Vec<VarInfo>, String> {
    let mut out = Vec::with_capacity(nodes.len());
    for chunk in nodes.chunks(300) {
        let mut req = Vec::with_capacity(chunk.len() * 3);
        for n in chunk {
            for a in [
                AttributeId::DataType,
                AttributeId::AccessLevel,
                AttributeId::Value,
            ] {
                req.push(ReadValueId {
                    node_id: n.clone(),
                    attribute_id: a as u32,
                    ..Default::default()
                });
            }
        }
        let r = session
            .read(&req, TimestampsToReturn::Neither, 0.0)
            .await
            .map_err(|e| format!("reading attributes: {e}"))?;
        for v in r.chunks(3) {
            let val = |d: &DataValue| d.value.clone().filter(|_| !d.status().is_bad());
            let data_type = match v.first().and_then(val) {
                Some(Variant::NodeId(n)) => type_name(&n),
                _ => "?".into(),
            };
            let access = match v.get(1).and_then(val) {
                Some(Variant::Byte(b)) => b,
                _ => 0,
            };
            out.push(VarInfo {
                data_type,
                access,
                value: v.get(2).and_then(val),
            });
        }
    }
    Ok(out)
}

/// The address space under `start` as an indented tree, `depth` levels deep.
pub async fn tree(session: &Session, start: &Address, depth: usize) -> Result<String, String> {
    let mut r = Resolver::new(session).await?;
    let root = r.resolve(start, None).await?;
    let mut out = String::new();
    let _ = writeln!(out, "{start}  [{root}]");
    let mut ns = String::new();
    for (i, u) in r.namespaces().iter().enumerate() {
        let _ = writeln!(ns, "  ns={i}  {u}");
    }
    walk(session, &mut r, &root, depth, "", &mut out).await?;
    out.push_str("namespaces:\n");
    out.push_str(&ns);
    Ok(out)
}

async fn walk(
    session: &Session,
    r: &mut Resolver<'_>,
    node: &NodeId,
    depth: usize,
    indent: &str,
    out: &mut String,
) -> Result<(), String> {
    if depth == 0 {
        return Ok(());
    }
    let kids = r.children(node).await?;
    let vars: Vec<NodeId> = kids
        .iter()
        .filter(|c| c.class == NodeClass::Variable)
        .map(|c| c.node.clone())
        .collect();
    let infos = read_vars(session, &vars).await?;
    let mut vi = infos.into_iter();
    for (i, c) in kids.iter().enumerate() {
        let last = i + 1 == kids.len();
        let (branch, next) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        let label = match c.class {
            NodeClass::Variable => {
                let v = vi.next();
                let (dt, acc, val) = v
                    .map(|v| (v.data_type, access(v.access), v.value))
                    .unwrap_or(("?".into(), "-", None));
                let val = val.map(|v| short(&v)).unwrap_or_default();
                format!("{}  {dt} {acc}  = {val}  [{}]", c.name, c.node)
            }
            NodeClass::Object => format!("{}/  [{}]", c.name, c.node),
            other => format!("{} ({other:?})  [{}]", c.name, c.node),
        };
        let _ = writeln!(out, "{indent}{branch}{label}");
        // The server's own diagnostics are large and rarely wanted.
        let skip = c.node == NodeId::new(0, 2253u32);
        if !skip {
            Box::pin(walk(
                session,
                r,
                &c.node,
                depth - 1,
                &format!("{indent}{next}"),
                out,
            ))
            .await?;
        }
    }
    Ok(())
}

fn short(v: &Variant) -> String {
    let s = match v {
        Variant::String(s) => format!("{:?}", s.as_ref()),
        Variant::LocalizedText(t) => format!("{:?}", t.text.as_ref()),
        other => other.to_string(),
    };
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

/// A variable found under the machine's object.
#[derive(Debug, Clone)]
struct Found {
    /// Browse names from the machine's object.
    path: Vec<String>,
    child: Child,
}

/// Names of properties that describe a variable rather than measure anything.
const META: [&str; 9] = [
    "EngineeringUnits",
    "EURange",
    "InstrumentRange",
    "ValuePrecision",
    "Definition",
    "NodeVersion",
    "EnumStrings",
    "EnumValues",
    "TrueState",
];

/// What a generated twin type came from.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    /// The twin type, as TOML.
    pub toml: String,
    pub signals: usize,
    /// Companion specifications recognised (e.g. "OPC 40001 MachineryItemState").
    pub recognised: Vec<String>,
    /// The machine's node, as the plant file's `source.node` should say.
    pub node: String,
}

fn snake(s: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for ch in s.chars() {
        if ch.is_ascii_alphanumeric() {
            if ch.is_ascii_uppercase() && prev_lower {
                out.push('_');
            }
            prev_lower = ch.is_ascii_lowercase() || ch.is_ascii_digit();
            out.push(ch.to_ascii_lowercase());
        } else {
            if !out.ends_with('_') && !out.is_empty() {
                out.push('_');
            }
            prev_lower = false;
        }
    }
    out.trim_matches('_').to_string()
}

/// Containers whose names add nothing to a signal's name.
const CONTAINERS: [&str; 4] = [
    "MachineryBuildingBlocks",
    "Monitoring",
    "Equipment",
    "Production",
];

fn signal_name(path: &[String]) -> String {
    let parts: Vec<String> = path
        .iter()
        .filter(|p| !CONTAINERS.contains(&p.as_str()))
        .map(|p| snake(p))
        .filter(|p| !p.is_empty())
        .collect();
    parts.join("_")
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Variables under a machine's object, breadth-first, 6 levels, with
/// their properties.
async fn variables_under(r: &mut Resolver<'_>, root: &NodeId) -> Result<Vec<Found>, String> {
    let mut found: Vec<Found> = Vec::new();
    let mut frontier: Vec<(Vec<String>, NodeId, bool)> = vec![(Vec::new(), root.clone(), false)];
    for _ in 0..6 {
        let mut next = Vec::new();
        for (path, n, under_var) in frontier {
            for c in r.children(&n).await? {
                let mut p = path.clone();
                p.push(c.name.clone());
                match c.class {
                    NodeClass::Object if !under_var => next.push((p, c.node.clone(), false)),
                    NodeClass::Variable => {
                        found.push(Found {
                            path: p.clone(),
                            child: c.clone(),
                        });
                        next.push((p, c.node.clone(), true));
                    }
                    _ => {}
                }
            }
        }
        frontier = next;
        if frontier.is_empty() {
            break;
        }
    }
    Ok(found)
}

/// A measurement found under a machine's object: the signal name it would
/// get in a generated twin type, and its node.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub name: String,
    pub node: NodeId,
}

/// The numeric and boolean variables under a machine's object that a
/// generated twin type would make signals of (not identification, not
/// properties of other variables), for variables that appear after
/// commissioning (firmware updates).
pub async fn measurements(r: &mut Resolver<'_>, root: &NodeId) -> Result<Vec<Measurement>, String> {
    let found = variables_under(r, root).await?;
    let nodes: Vec<NodeId> = found.iter().map(|f| f.child.node.clone()).collect();
    let infos = read_vars(r.session(), &nodes).await?;
    let paths: std::collections::BTreeSet<&[String]> =
        found.iter().map(|f| f.path.as_slice()).collect();
    let mut out = Vec::new();
    for (f, info) in found.iter().zip(&infos) {
        if signal_kind(&info.data_type).is_none()
            || f.path.first().map(String::as_str) == Some("Identification")
            || info.access & 1 == 0
        {
            continue;
        }
        let last = f.path.last().map(String::as_str).unwrap_or("");
        let parent_is_var = f.path.len() >= 2 && paths.contains(&f.path[..f.path.len() - 1]);
        if parent_is_var || META.contains(&last) {
            continue;
        }
        let name = signal_name(&f.path);
        if !name.is_empty() {
            out.push(Measurement {
                name,
                node: f.child.node.clone(),
            });
        }
    }
    Ok(out)
}

/// Write a twin type for the machine object at `node`.
pub async fn twin_type(session: &Session, node: &Address, kind: &str) -> Result<Generated, String> {
    let mut r = Resolver::new(session).await?;
    let root = r.resolve(node, None).await?;
    let found = variables_under(&mut r, &root).await?;
    let nodes: Vec<NodeId> = found.iter().map(|f| f.child.node.clone()).collect();
    let infos = read_vars(session, &nodes).await?;
    let by_path: BTreeMap<Vec<String>, usize> = found
        .iter()
        .enumerate()
        .map(|(i, f)| (f.path.clone(), i))
        .collect();
    let prop = |path: &[String], name: &str| -> Option<&Variant> {
        let mut p = path.to_vec();
        p.push(name.to_string());
        by_path.get(&p).and_then(|&i| infos[i].value.as_ref())
    };

    let mut recognised = Vec::new();
    // OPC 40001 identification.
    let mut ident: Vec<(String, String)> = Vec::new();
    for (i, f) in found.iter().enumerate() {
        if f.path.len() == 2 && f.path[0] == "Identification" {
            if let Some(v) = &infos[i].value {
                let s = match v {
                    Variant::String(s) => s.as_ref().to_string(),
                    Variant::LocalizedText(t) => t.text.as_ref().to_string(),
                    other => other.to_string(),
                };
                if !s.is_empty() {
                    ident.push((f.path[1].clone(), s));
                }
            }
        }
    }
    if !ident.is_empty() {
        recognised.push("OPC 40001 Identification".to_string());
    }

    struct Sig {
        name: String,
        kind: &'static str,
        unit: String,
        min: Option<f64>,
        max: Option<f64>,
        path: String,
        description: String,
    }
    let mut sigs: Vec<Sig> = Vec::new();
    let mut state_signal = false;
    let mut counters: (Option<String>, Option<String>) = (None, None);
    for (i, f) in found.iter().enumerate() {
        let info = &infos[i];
        let Some(kind) = signal_kind(&info.data_type) else {
            continue;
        };
        if f.path.first().map(String::as_str) == Some("Identification") {
            continue;
        }
        let last = f.path.last().map(String::as_str).unwrap_or("");
        let parent_is_var = f.path.len() >= 2 && by_path.contains_key(&f.path[..f.path.len() - 1]);
        // State machines: the current state's number.
        let in_state = |m: &str| {
            f.path.len() >= 3
                && f.path[f.path.len() - 3] == m
                && f.path[f.path.len() - 2] == "CurrentState"
                && last == "Number"
        };
        let (name, kind, description) = if in_state("MachineryItemState") {
            state_signal = true;
            recognised.push("OPC 40001 MachineryItemState".into());
            (
                "state".to_string(),
                "int",
                "OPC 40001 MachineryItemState (0 NotAvailable, 1 OutOfService, 2 Executing, 3 NotExecuting)".to_string(),
            )
        } else if in_state("MachineryOperationMode") {
            recognised.push("OPC 40001 MachineryOperationMode".into());
            (
                "operation_mode".to_string(),
                "int",
                "OPC 40001 MachineryOperationMode (0 None, 1 Maintenance, 2 Setup, 3 Processing)"
                    .to_string(),
            )
        } else if parent_is_var || META.contains(&last) {
            continue;
        } else {
            let mut description = String::new();
            if f.path.first().map(String::as_str) == Some("Monitoring") && f.path.len() >= 3 {
                let what = &f.path[1];
                let r = format!("OPC 40501 Monitoring/{what}");
                if !recognised.contains(&r) {
                    recognised.push(r);
                }
                description = format!("OPC 40501 {what} {last}");
            }
            if f.path.first().map(String::as_str) == Some("Production") {
                let r = "OPC 40501 Production".to_string();
                if !recognised.contains(&r) {
                    recognised.push(r);
                }
            }
            let counter = kind == "int"
                && ["Count", "Counter", "Completed", "Produced", "Parts"]
                    .iter()
                    .any(|k| last.ends_with(k));
            (
                signal_name(&f.path),
                if counter { "counter" } else { kind },
                description,
            )
        };
        if name.is_empty() || sigs.iter().any(|s| s.name == name) {
            continue;
        }
        if kind == "counter" {
            let l = name.to_ascii_lowercase();
            if l.contains("good") && counters.0.is_none() {
                counters.0 = Some(name.clone());
            } else if (l.contains("reject") || l.contains("scrap") || l.contains("bad"))
                && counters.1.is_none()
            {
                counters.1 = Some(name.clone());
            } else if l.contains("completed") && counters.0.is_none() {
                counters.0 = Some(name.clone());
            }
        }
        let unit = match prop(&f.path, "EngineeringUnits") {
            Some(Variant::ExtensionObject(o)) => o
                .inner_as::<EUInformation>()
                .map(|e| e.display_name.text.as_ref().to_string())
                .unwrap_or_default(),
            _ => String::new(),
        };
        let (min, max) = match prop(&f.path, "EURange") {
            Some(Variant::ExtensionObject(o)) => o
                .inner_as::<Range>()
                .map(|r| (Some(r.low), Some(r.high)))
                .unwrap_or((None, None)),
            _ => (None, None),
        };
        sigs.push(Sig {
            name,
            kind,
            unit,
            min,
            max,
            path: f.path.join("/"),
            description,
        });
    }
    recognised.dedup();
    // The state machines first, then the rest as found.
    sigs.sort_by_key(|s| match s.name.as_str() {
        "state" => 0,
        "operation_mode" => 1,
        _ => 2,
    });
    if sigs.is_empty() {
        return Err(format!(
            "no numeric or boolean variable under `{node}` ({} variables seen); is it the machine's object?",
            found.len()
        ));
    }

    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Generated by `ironlake opcua browse --node {node} --twin-type {kind}`."
    );
    if !recognised.is_empty() {
        let _ = writeln!(t, "# Recognised: {}.", recognised.join(", "));
    }
    let _ = writeln!(t, "kind = {}", toml_str(kind));
    let get = |k: &str| ident.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let name = match (get("Manufacturer"), get("Model")) {
        (Some(a), Some(b)) => format!("{a} {b}"),
        (Some(a), None) | (None, Some(a)) => a,
        _ => kind.to_string(),
    };
    let _ = writeln!(t, "name = {}", toml_str(&name));
    let desc: Vec<String> = ident.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let _ = writeln!(
        t,
        "description = {}",
        toml_str(&if desc.is_empty() {
            format!("Read from OPC UA node {node}")
        } else {
            desc.join("; ")
        })
    );
    if state_signal {
        t.push_str("\n[state]\nsignal = \"state\"\ncodes = { \"0\" = \"UNKNOWN\", \"1\" = \"DOWN\", \"2\" = \"RUNNING\", \"3\" = \"IDLE\" }\n");
    }
    if counters.0.is_some() || counters.1.is_some() {
        t.push_str("\n[counters]\n");
        if let Some(g) = &counters.0 {
            let _ = writeln!(t, "good = {}", toml_str(g));
        }
        if let Some(b) = &counters.1 {
            let _ = writeln!(t, "reject = {}", toml_str(b));
        }
    }
    for s in &sigs {
        t.push_str("\n[[signals]]\n");
        let _ = writeln!(t, "name = {}", toml_str(&s.name));
        if !s.unit.is_empty() {
            let _ = writeln!(t, "unit = {}", toml_str(&s.unit));
        }
        let _ = writeln!(t, "type = \"{}\"", s.kind);
        if let (Some(lo), Some(hi)) = (s.min, s.max) {
            if lo.is_finite() && hi.is_finite() && lo < hi {
                let _ = writeln!(t, "min = {lo:?}\nmax = {hi:?}");
            }
        }
        if s.name == "state" && s.min.is_none() {
            t.push_str("min = 0\nmax = 3\n");
        }
        if !s.description.is_empty() {
            let _ = writeln!(t, "description = {}", toml_str(&s.description));
        }
        let _ = writeln!(t, "opcua = {{ path = {} }}", toml_str(&s.path));
    }
    Ok(Generated {
        toml: t,
        signals: sigs.len(),
        recognised,
        node: node.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_from_browse_paths() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            signal_name(&p(&["Monitoring", "Spindle", "Override"])),
            "spindle_override"
        );
        assert_eq!(
            signal_name(&p(&["Spindle", "ActualSpeed"])),
            "spindle_actual_speed"
        );
        assert_eq!(signal_name(&p(&["Temperature 1"])), "temperature_1");
        assert_eq!(snake("IsRotating"), "is_rotating");
        assert_eq!(snake("EURange"), "eurange");
    }
}
