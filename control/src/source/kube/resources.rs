//! The API resources the Kubernetes source watches: the core kinds at `v1`, and every
//! version weft reads of each SMI kind.

use ::kube::core::ApiResource;

use crate::model::Kind;

/// One kind weft watches, at every version it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchedKind {
    /// The model kind.
    pub kind: Kind,
    /// The API group (`""` for the core group).
    pub group: &'static str,
    /// Versions, oldest first; a cluster may serve any subset of them.
    pub versions: &'static [&'static str],
    /// The resource's plural name, as in its URL.
    pub plural: &'static str,
}

const SMI_SPLIT: &[&str] = &["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"];
const SMI_ACCESS: &[&str] = &["v1alpha1", "v1alpha2", "v1alpha3"];

/// Everything the source watches. The core kinds come first: they always exist, so a
/// cluster without them is not a Kubernetes cluster.
pub const WATCHED: &[WatchedKind] = &[
    WatchedKind { kind: Kind::Namespace, group: "", versions: &["v1"], plural: "namespaces" },
    WatchedKind { kind: Kind::Service, group: "", versions: &["v1"], plural: "services" },
    WatchedKind { kind: Kind::Pod, group: "", versions: &["v1"], plural: "pods" },
    WatchedKind {
        kind: Kind::EndpointSlice,
        group: "discovery.k8s.io",
        versions: &["v1"],
        plural: "endpointslices",
    },
    WatchedKind {
        kind: Kind::TrafficSplit,
        group: "split.smi-spec.io",
        versions: SMI_SPLIT,
        plural: "trafficsplits",
    },
    WatchedKind {
        kind: Kind::HttpRouteGroup,
        group: "specs.smi-spec.io",
        versions: SMI_SPLIT,
        plural: "httproutegroups",
    },
    WatchedKind {
        kind: Kind::TcpRoute,
        group: "specs.smi-spec.io",
        versions: SMI_SPLIT,
        plural: "tcproutes",
    },
    WatchedKind {
        kind: Kind::TrafficTarget,
        group: "access.smi-spec.io",
        versions: SMI_ACCESS,
        plural: "traffictargets",
    },
];

impl WatchedKind {
    /// The watched kind of a model kind.
    pub fn of(kind: Kind) -> &'static WatchedKind {
        // Every model kind is in WATCHED (checked by a test).
        WATCHED.iter().find(|w| w.kind == kind).unwrap_or(&WATCHED[0])
    }

    /// Whether the kind is one of the SMI CRDs, which a cluster may lack at some or all versions.
    pub fn is_crd(&self) -> bool {
        self.group.ends_with(".smi-spec.io")
    }

    /// The API resource at one version.
    pub fn at(&self, version: &str) -> ApiResource {
        let api_version =
            if self.group.is_empty() { version.to_string() } else { format!("{}/{version}", self.group) };
        ApiResource {
            group: self.group.to_string(),
            version: version.to_string(),
            api_version,
            kind: self.kind.as_str().to_string(),
            plural: self.plural.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_kind_is_watched_once() {
        let kinds = [
            Kind::Namespace,
            Kind::Service,
            Kind::Pod,
            Kind::EndpointSlice,
            Kind::TrafficSplit,
            Kind::HttpRouteGroup,
            Kind::TcpRoute,
            Kind::TrafficTarget,
        ];
        for kind in kinds {
            assert_eq!(WATCHED.iter().filter(|w| w.kind == kind).count(), 1, "{kind}");
            assert_eq!(WatchedKind::of(kind).kind, kind);
        }
    }

    #[test]
    fn api_resources_name_group_version_and_plural() {
        let split = WatchedKind::of(Kind::TrafficSplit).at("v1alpha2");
        assert_eq!(split.api_version, "split.smi-spec.io/v1alpha2");
        assert_eq!(split.plural, "trafficsplits");
        assert_eq!(WatchedKind::of(Kind::Pod).at("v1").api_version, "v1");
        assert!(WatchedKind::of(Kind::TcpRoute).is_crd());
        assert!(!WatchedKind::of(Kind::EndpointSlice).is_crd());
    }
}
