//! The admin server: /ready, /live, /metrics, /config_dump.
