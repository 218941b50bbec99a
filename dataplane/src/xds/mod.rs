//! The xDS client: ADS (Delta or SotW) to the control plane, decoding resources into [`crate::config`].
