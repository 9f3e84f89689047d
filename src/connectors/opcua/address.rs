//! Where a value is in a server's address space, as written in configs, and
//! how it is found on a live server.
//!
//! Two notations:
//! - a NodeId: `ns=2;s=Press3.Speed`, `i=2258`, or with the namespace's URI
//!   instead of its index, `nsu=urn:acme:plc;s=Press3.Speed`. Indexes can
//!   change when a server restarts; URIs do not, so configs should use them.
//! - a browse path: `/Objects/Plant/Line1/Press3/Spindle/Speed` from the
//!   root, or `Spindle/Speed` from the machine's object. A segment may name
//!   its namespace by a prefix (`di:Identification`, prefixes from
//!   `[opcua.namespaces]` plus `ua`, `di`, `machinery`, `mt`) or, not
//!   recommended, by index (`2:Speed`); a bare name matches in any namespace.
//!
//! Paths are resolved by browsing (one Browse per parent, cached), so a
//! name that is missing is reported with the names that are there.

use std::collections::{BTreeMap, HashMap};

use opcua::client::Session;
use opcua::types::{
    BrowseDescription, BrowseDirection, NamespaceMap, NodeClass, NodeId, ReferenceTypeId,
};

/// Namespace URIs of the companion specifications ironlake knows by prefix.
pub const BUILTIN_PREFIXES: [(&str, &str); 4] = [
    ("ua", "http://opcfoundation.org/UA/"),
    ("di", "http://opcfoundation.org/UA/DI/"),
    ("machinery", "http://opcfoundation.org/UA/Machinery/"),
    ("mt", "http://opcfoundation.org/UA/MachineTool/"),
];

/// A namespace named by index or by URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ns {
    Index(u16),
    Uri(String),
}

/// One step of a browse path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Segment {
    pub ns: Option<Ns>,
    pub name: String,
}

/// An address as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A NodeId; `ident` is its identifier part (`s=...`, `i=...`, `g=...`, `b=...`).
    Node { ns: Ns, ident: String },
    /// A browse path; relative ones start at the machine's node.
    Path {
        absolute: bool,
        segments: Vec<Segment>,
    },
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Node {
                ns: Ns::Index(i), ..
            } if *i == 0 => write!(f, "{}", self.ident_text()),
            Address::Node {
                ns: Ns::Index(i),
                ident,
            } => write!(f, "ns={i};{ident}"),
            Address::Node {
                ns: Ns::Uri(u),
                ident,
            } => write!(f, "nsu={u};{ident}"),
            Address::Path { absolute, segments } => {
                if *absolute {
                    f.write_str("/")?;
                }
                let parts: Vec<String> = segments
                    .iter()
                    .map(|s| match &s.ns {
                        Some(Ns::Index(i)) => format!("{i}:{}", s.name),
                        _ => s.name.clone(),
                    })
                    .collect();
                f.write_str(&parts.join("/"))
            }
        }
    }
}

impl Address {
    fn ident_text(&self) -> &str {
        match self {
            Address::Node { ident, .. } => ident,
            Address::Path { .. } => "",
        }
    }

    /// Parse an address; `prefixes` are the user's namespace prefixes.
    pub fn parse(s: &str, prefixes: &BTreeMap<String, String>) -> Result<Address, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("an empty address".into());
        }
        if let Some(rest) = s.strip_prefix("nsu=") {
            let (uri, ident) = rest
                .split_once(';')
                .ok_or_else(|| format!("`{s}`: expected `nsu=URI;s=NAME` (or i=, g=, b=)"))?;
            check_ident(s, ident)?;
            return Ok(Address::Node {
                ns: Ns::Uri(uri.to_string()),
                ident: ident.to_string(),
            });
        }
        if let Some(rest) = s.strip_prefix("ns=") {
            let (idx, ident) = rest
                .split_once(';')
                .ok_or_else(|| format!("`{s}`: expected `ns=N;s=NAME` (or i=, g=, b=)"))?;
            let idx: u16 = idx
                .parse()
                .map_err(|_| format!("`{s}`: the namespace index `{idx}` is not a number"))?;
            check_ident(s, ident)?;
            return Ok(Address::Node {
                ns: Ns::Index(idx),
                ident: ident.to_string(),
            });
        }
        if ["i=", "s=", "g=", "b="].iter().any(|p| s.starts_with(p)) {
            check_ident(s, s)?;
            return Ok(Address::Node {
                ns: Ns::Index(0),
                ident: s.to_string(),
            });
        }
        let absolute = s.starts_with('/');
        let body = s.trim_start_matches('/');
        let mut segments = Vec::new();
        for part in body.split('/') {
            if part.is_empty() {
                return Err(format!("`{s}`: a browse path has an empty step"));
            }
            segments.push(parse_segment(part, prefixes));
        }
        Ok(Address::Path { absolute, segments })
    }
}

fn check_ident(whole: &str, ident: &str) -> Result<(), String> {
    let ok = match ident.split_at_checked(2) {
        Some(("i=", n)) => n.parse::<u32>().is_ok(),
        Some(("s=" | "g=" | "b=", v)) => !v.is_empty(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{whole}`: the identifier must be i=NUMBER, s=STRING, g=GUID or b=BASE64"
        ))
    }
}

fn parse_segment(part: &str, prefixes: &BTreeMap<String, String>) -> Segment {
    if let Some((p, name)) = part.split_once(':') {
        if !name.is_empty() {
            if let Ok(i) = p.parse::<u16>() {
                return Segment {
                    ns: Some(Ns::Index(i)),
                    name: name.to_string(),
                };
            }
            let uri = prefixes.get(p).cloned().or_else(|| {
                BUILTIN_PREFIXES
                    .iter()
                    .find(|(k, _)| *k == p)
                    .map(|(_, u)| u.to_string())
            });
            if let Some(uri) = uri {
                return Segment {
                    ns: Some(Ns::Uri(uri)),
                    name: name.to_string(),
                };
            }
        }
    }
    Segment {
        ns: None,
        name: part.to_string(),
    }
}

/// A node found by browsing.
#[derive(Debug, Clone)]
pub struct Child {
    pub node: NodeId,
    /// Namespace URI of the browse name (empty when the server does not list it).
    pub ns_uri: String,
    pub name: String,
    pub display: String,
    pub class: NodeClass,
    pub type_definition: Option<NodeId>,
}

/// Finds addresses on one session; namespaces are read once per session.
pub struct Resolver<'a> {
    session: &'a Session,
    namespaces: Vec<String>,
    map: NamespaceMap,
    children: HashMap<NodeId, Vec<Child>>,
}

impl<'a> Resolver<'a> {
    /// A resolver on a connected session (reads the server's namespace array).
    pub async fn new(session: &'a Session) -> Result<Resolver<'a>, String> {
        let map = session
            .read_namespace_array()
            .await
            .map_err(|e| format!("reading the namespace array: {e}"))?;
        let mut namespaces = vec![String::new(); map.known_namespaces().len()];
        for (uri, &i) in map.known_namespaces() {
            if let Some(slot) = namespaces.get_mut(i as usize) {
                *slot = uri.clone();
            }
        }
        Ok(Resolver {
            session,
            namespaces,
            map,
            children: HashMap::new(),
        })
    }

    /// The session it browses.
    pub fn session(&self) -> &'a Session {
        self.session
    }

    /// The server's namespace URIs by index.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// The URI of a namespace index.
    pub fn uri(&self, idx: u16) -> &str {
        self.namespaces
            .get(idx as usize)
            .map(String::as_str)
            .unwrap_or("")
    }

    fn index(&self, ns: &Ns) -> Result<u16, String> {
        match ns {
            Ns::Index(i) => Ok(*i),
            Ns::Uri(u) => self.map.get_index(u).ok_or_else(|| {
                format!(
                    "the server has no namespace `{u}` (it has: {})",
                    self.namespaces.join(", ")
                )
            }),
        }
    }

    /// The NodeId of an address; relative paths start at `base`.
    pub async fn resolve(
        &mut self,
        addr: &Address,
        base: Option<&NodeId>,
    ) -> Result<NodeId, String> {
        match addr {
            Address::Node { ns, ident } => {
                let idx = self.index(ns)?;
                format!("ns={idx};{ident}")
                    .parse::<NodeId>()
                    .map_err(|_| format!("`{addr}` is not a valid NodeId"))
            }
            Address::Path { absolute, segments } => {
                let mut at = if *absolute {
                    NodeId::from(opcua::types::ObjectId::RootFolder)
                } else {
                    base.cloned().ok_or_else(|| {
                        format!("`{addr}` is relative but the machine has no `node`")
                    })?
                };
                let mut walked = if *absolute {
                    String::new()
                } else {
                    base.map(|b| b.to_string()).unwrap_or_default()
                };
                for seg in segments {
                    let want = match &seg.ns {
                        Some(ns) => Some(self.index(ns)?),
                        None => None,
                    };
                    let kids = self.children(&at).await?;
                    let found = kids.iter().find(|c| {
                        c.name == seg.name
                            && want.is_none_or(|w| {
                                c.ns_uri == self.uri(w)
                                    || c.node.namespace == w && c.ns_uri.is_empty()
                            })
                    });
                    match found {
                        Some(c) => at = c.node.clone(),
                        None => {
                            let names: Vec<&str> =
                                kids.iter().map(|c| c.name.as_str()).take(20).collect();
                            return Err(format!(
                                "no `{}` under `{}` (there: {})",
                                seg.name,
                                if walked.is_empty() { "/" } else { &walked },
                                if names.is_empty() {
                                    "nothing".to_string()
                                } else {
                                    names.join(", ")
                                }
                            ));
                        }
                    }
                    walked.push('/');
                    walked.push_str(&seg.name);
                }
                Ok(at)
            }
        }
    }

    /// The hierarchical children of a node (cached).
    pub async fn children(&mut self, node: &NodeId) -> Result<Vec<Child>, String> {
        if let Some(c) = self.children.get(node) {
            return Ok(c.clone());
        }
        let desc = BrowseDescription {
            node_id: node.clone(),
            browse_direction: BrowseDirection::Forward,
            reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
            include_subtypes: true,
            node_class_mask: 0,
            result_mask: 0x3f,
        };
        let mut out = Vec::new();
        let mut results = self
            .session
            .browse(&[desc], 1000, None)
            .await
            .map_err(|e| format!("browsing {node}: {e}"))?;
        while let Some(r) = results.pop() {
            if r.status_code.is_bad() {
                return Err(format!("browsing {node}: {}", r.status_code));
            }
            for rd in r.references.unwrap_or_default() {
                let Some(id) = rd.node_id.try_resolve(&self.map).map(|c| c.into_owned()) else {
                    continue;
                };
                let ns_idx = rd.browse_name.namespace_index;
                out.push(Child {
                    node: id,
                    ns_uri: self.uri(ns_idx).to_string(),
                    name: rd.browse_name.name.as_ref().to_string(),
                    display: rd.display_name.text.as_ref().to_string(),
                    class: rd.node_class,
                    type_definition: rd
                        .type_definition
                        .try_resolve(&self.map)
                        .map(|c| c.into_owned())
                        .filter(|n| !n.is_null()),
                });
            }
            if r.continuation_point.is_null() {
                break;
            }
            results = self
                .session
                .browse_next(false, &[r.continuation_point])
                .await
                .map_err(|e| format!("browsing {node} (next): {e}"))?;
        }
        self.children.insert(node.clone(), out.clone());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Address, String> {
        let mut p = BTreeMap::new();
        p.insert("acme".to_string(), "urn:acme".to_string());
        Address::parse(s, &p)
    }

    #[test]
    fn node_ids_by_index_and_by_uri() {
        assert_eq!(
            parse("ns=2;s=Press3.Speed").unwrap(),
            Address::Node {
                ns: Ns::Index(2),
                ident: "s=Press3.Speed".into()
            }
        );
        assert_eq!(
            parse("nsu=urn:acme:plc;s=A;B").unwrap(),
            Address::Node {
                ns: Ns::Uri("urn:acme:plc".into()),
                ident: "s=A;B".into()
            }
        );
        assert_eq!(
            parse("i=2258").unwrap(),
            Address::Node {
                ns: Ns::Index(0),
                ident: "i=2258".into()
            }
        );
        assert!(parse("ns=x;s=a").unwrap_err().contains("not a number"));
        assert!(parse("ns=2;q=a").unwrap_err().contains("identifier"));
        assert!(parse("i=abc").is_err());
        assert_eq!(parse("nsu=urn:a;s=b").unwrap().to_string(), "nsu=urn:a;s=b");
    }

    #[test]
    fn browse_paths_with_prefixes() {
        let a = parse("/Objects/acme:Plant/di:Identification/2:Speed/Motor:1").unwrap();
        let Address::Path { absolute, segments } = a else {
            panic!()
        };
        assert!(absolute);
        assert_eq!(segments[0].ns, None);
        assert_eq!(segments[1].ns, Some(Ns::Uri("urn:acme".into())));
        assert_eq!(
            segments[2].ns,
            Some(Ns::Uri("http://opcfoundation.org/UA/DI/".into()))
        );
        assert_eq!(segments[3].ns, Some(Ns::Index(2)));
        // An unknown prefix is part of the name.
        assert_eq!(segments[4].ns, None);
        assert_eq!(segments[4].name, "Motor:1");
        let rel = parse("Spindle/Speed").unwrap();
        assert!(matches!(
            rel,
            Address::Path {
                absolute: false,
                ..
            }
        ));
        assert!(parse("/Objects//x").unwrap_err().contains("empty step"));
    }
}
