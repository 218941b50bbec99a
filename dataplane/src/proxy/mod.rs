//! The data path: listeners, HTTP and TCP proxying, routing, load balancing.
