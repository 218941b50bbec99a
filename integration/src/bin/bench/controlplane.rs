//! `bench controlplane`: the control plane under 1,000 ADS clients (placeholder until the load client lands).

/// Runs the control-plane benchmark with its arguments.
pub(crate) async fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("bench controlplane: not implemented yet")
}
