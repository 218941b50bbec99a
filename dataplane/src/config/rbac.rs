//! Role-based access control, as Envoy's RBAC filters say it (the subset weft's control plane
//! emits for TrafficTargets): a request or connection is allowed when some policy has a
//! principal matching the peer and a permission matching what it asks for.

use super::{HeaderMatch, StringMatch};

/// An RBAC filter's rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Rbac {
    /// `ALLOW` (allowed iff a policy matches) or `DENY` (denied iff a policy matches).
    pub action: RbacAction,
    /// Policies by name, in name order.
    pub policies: Vec<Policy>,
}

/// What a matching policy means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RbacAction {
    /// A match allows; no match denies.
    Allow,
    /// A match denies; no match allows.
    Deny,
}

/// One named policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Name (for logs and metrics).
    pub name: String,
    /// Any of these must match the peer.
    pub principals: Vec<Principal>,
    /// Any of these must match the request or connection.
    pub permissions: Vec<Permission>,
}

/// Who the peer is.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// Anyone.
    Any,
    /// The peer's certificate identity (URI SAN, else subject) matches.
    Authenticated(StringMatch),
    /// All of these.
    And(Vec<Principal>),
    /// Any of these.
    Or(Vec<Principal>),
    /// Not this.
    Not(Box<Principal>),
}

/// What the peer asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Permission {
    /// Anything.
    Any,
    /// All of these.
    And(Vec<Permission>),
    /// Any of these.
    Or(Vec<Permission>),
    /// Not this.
    Not(Box<Permission>),
    /// A request header (or pseudo-header `:method`, `:path`, `:authority`) matches; never on TCP.
    Header(HeaderMatch),
    /// The request path without the query matches; never on TCP.
    UrlPath(StringMatch),
    /// The connection's destination port.
    DestinationPort(u16),
    /// The connection's destination port is in this half-open range (Envoy's `Int32Range`).
    DestinationPortRange(std::ops::Range<u32>),
}

impl Rbac {
    /// Rules that allow everything: a `DENY` filter without policies (what an RBAC filter
    /// without `rules` does in Envoy).
    pub fn allow_all() -> Rbac {
        Rbac { action: RbacAction::Deny, policies: Vec::new() }
    }
}
