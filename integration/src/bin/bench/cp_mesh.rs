//! The benchmark's mesh as manifests: namespaces of HTTP Services, each with an
//! EndpointSlice whose endpoints point at meshed Pods, and a few TrafficSplits; and the
//! two changes the benchmark times (a split's weights, one Service's endpoints).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::Context;

/// Services per namespace.
const PER_NAMESPACE: usize = 500;
/// The port every Service and Pod serves HTTP on.
pub(crate) const PORT: u16 = 8080;

/// The shape of the generated mesh.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MeshShape {
    /// Number of Services.
    pub(crate) services: usize,
    /// Endpoints per Service.
    pub(crate) endpoints_per_service: usize,
    /// Number of TrafficSplits.
    pub(crate) splits: usize,
    /// Write a Pod per endpoint (meshed workloads) as well as the EndpointSlices.
    pub(crate) pods: bool,
    /// Services per manifest file.
    pub(crate) per_file: usize,
}

impl MeshShape {
    /// Number of namespaces.
    pub(crate) fn namespaces(&self) -> usize {
        self.services.div_ceil(PER_NAMESPACE).max(1)
    }

    /// The namespace of Service `i`.
    pub(crate) fn namespace(&self, i: usize) -> String {
        format!("bench-{}", i / PER_NAMESPACE)
    }

    /// The address of endpoint `j` of Service `i` (10.0.0.0/8, nothing dials it).
    pub(crate) fn endpoint_ip(&self, i: usize, j: usize) -> Ipv4Addr {
        let n = u32::try_from(i * self.endpoints_per_service + j).unwrap_or(u32::MAX) + 1;
        Ipv4Addr::from(0x0a00_0000 | (n & 0x00ff_ffff))
    }

    /// The root Service of split `k`: its backends are the two Services after it.
    pub(crate) fn split_root(&self, k: usize) -> usize {
        // Spread over the namespaces, three Services per split, never past the end.
        let ns = k % self.namespaces();
        let slot = k / self.namespaces();
        (ns * PER_NAMESPACE + slot * 3).min(self.services.saturating_sub(3))
    }

    /// The Service whose endpoints change: the last one, which no split names.
    pub(crate) fn churn_service(&self) -> usize {
        self.services - 1
    }
}

/// `svc-<i>`: the name of Service `i`, of its ServiceAccount and its app label.
pub(crate) fn service_name(i: usize) -> String {
    format!("svc-{i}")
}

fn write_service(out: &mut String, shape: &MeshShape, i: usize) -> std::fmt::Result {
    let (name, ns) = (service_name(i), shape.namespace(i));
    write!(
        out,
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  selector: {{app: {name}}}\n  ports:\n  - {{name: http, port: {PORT}, targetPort: {PORT}}}\n"
    )?;
    if shape.pods {
        for j in 0..shape.endpoints_per_service {
            write!(
                out,
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}-{j}, namespace: {ns}, labels: {{app: {name}}}}}\n\
                 spec:\n  serviceAccountName: {name}\n  containers:\n  - name: app\n    ports: [{{name: http, containerPort: {PORT}}}]\n\
                 status: {{podIP: {}}}\n",
                shape.endpoint_ip(i, j)
            )?;
        }
    }
    out.push_str(&endpoint_slice(shape, i, shape.endpoints_per_service));
    Ok(())
}

/// The EndpointSlice of Service `i` with its first `count` endpoints.
pub(crate) fn endpoint_slice(shape: &MeshShape, i: usize, count: usize) -> String {
    let (name, ns) = (service_name(i), shape.namespace(i));
    let mut out = format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-slice, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {PORT}}}]\nendpoints:\n"
    );
    for j in 0..count {
        let pod =
            if shape.pods { format!(", targetRef: {{kind: Pod, name: {name}-{j}}}") } else { String::new() };
        let _ = writeln!(out, "- {{addresses: [{}]{pod}}}", shape.endpoint_ip(i, j));
    }
    out
}

/// TrafficSplit `k` with `weight` % to the first backend and the rest to the second.
pub(crate) fn traffic_split(shape: &MeshShape, k: usize, weight: u32) -> String {
    let root = shape.split_root(k);
    format!(
        "---\napiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\n\
         metadata: {{name: split-{k}, namespace: {}}}\n\
         spec:\n  service: {}\n  backends:\n  - {{service: {}, weight: {weight}}}\n  - {{service: {}, weight: {}}}\n",
        shape.namespace(root),
        service_name(root),
        service_name(root + 1),
        service_name(root + 2),
        100 - weight.min(100)
    )
}

/// Writes the mesh into `dir`: per namespace, `bench-<n>.yaml` with the Namespace and
/// `bench-<n>-<k>.yaml` files of `per_file` Services each (with their Pods and
/// EndpointSlices), and `splits.yaml`; returns the bytes written.
pub(crate) fn write(shape: &MeshShape, dir: &Path) -> anyhow::Result<u64> {
    anyhow::ensure!(
        shape.services >= 3,
        "--services must be at least 3 (a split needs a root and two backends)"
    );
    anyhow::ensure!(shape.endpoints_per_service >= 1, "every Service needs at least one endpoint");
    anyhow::ensure!(
        shape.services * shape.endpoints_per_service < 0x00ff_ffff,
        "too many endpoints for 10.0.0.0/8"
    );
    let mut total = 0u64;
    for n in 0..shape.namespaces() {
        let ns = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench-{n}\n  annotations: {{weft.io/inject: enabled}}\n"
        );
        std::fs::write(dir.join(format!("bench-{n}.yaml")), &ns).context("writing a namespace")?;
        total += ns.len() as u64;
        let services: Vec<usize> =
            ((n * PER_NAMESPACE)..((n + 1) * PER_NAMESPACE).min(shape.services)).collect();
        for (k, chunk) in services.chunks(shape.per_file.max(1)).enumerate() {
            let mut out = String::new();
            for i in chunk {
                write_service(&mut out, shape, *i)?;
            }
            let path = dir.join(format!("bench-{n}-{k:04}.yaml"));
            std::fs::write(&path, &out).with_context(|| format!("writing {}", path.display()))?;
            total += out.len() as u64;
        }
    }
    let splits: String = (0..shape.splits).map(|k| traffic_split(shape, k, 50)).collect();
    std::fs::write(dir.join("splits.yaml"), &splits).context("writing splits.yaml")?;
    Ok(total + splits.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_roots_and_churn_service_stay_inside_the_mesh() {
        let shape =
            MeshShape { services: 1000, endpoints_per_service: 5, splits: 10, pods: true, per_file: 10 };
        for k in 0..shape.splits {
            assert!(shape.split_root(k) + 2 < shape.churn_service(), "split {k}");
            assert_eq!(shape.namespace(shape.split_root(k)), shape.namespace(shape.split_root(k) + 2));
        }
        assert_ne!(shape.endpoint_ip(0, 4), shape.endpoint_ip(1, 0));
    }
}
