//! Seeing the servers (issue 17): the Prometheus metrics every role
//! exports ([`metrics`]), the operator's status model with its HTML page
//! and text table ([`status`]), the page's login, cookie and CSRF rules
//! ([`page`]), and the small blocking HTTP listener that serves both
//! ([`http`]). Written once for both binaries: `tryst` serves the status
//! page with axum over the same [`http::HttpApp`], `tryst-std` with the
//! blocking listener; `/metrics` is the blocking listener in both.

pub mod drops;
pub mod http;
pub mod metrics;
pub mod page;
pub mod status;
