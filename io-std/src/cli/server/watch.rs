//! How a running server is watched: its metrics listener (`--metrics`),
//! its status page (`--http`, on the binary's driver: axum on tokio, the
//! blocking listener on `tryst-std`), and the status answer of `tryst
//! status` (through the store's command queue). Everything reads the
//! roles through their snapshot commands.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tryst_core::wire::SessionId;

use crate::cli::driver::Driver;
use crate::cli::CliError;
use crate::observe::http::{serve_blocking, HttpApp, HttpListener, HttpRequest, HttpResponse};
use crate::observe::metrics::{ServerMetrics, CONTENT_TYPE};
use crate::observe::page::{operator_token, Operator, StatusPage, OPERATOR_TOKEN_FILE};
use crate::observe::status::{self, Status};
use crate::role::session_server::SessionHandle;
use crate::role::trigger_server::TriggerHandle;
use crate::store::{LogRow, ServerStore, Store};

/// How long the page waits for an end to be carried out.
const END_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The roles a server process runs, as the watchers reach them.
#[derive(Debug, Clone)]
pub struct Roles {
    /// The session server, if it runs here.
    pub session: Option<SessionHandle>,
    /// The trigger server, if it runs here.
    pub trigger: Option<TriggerHandle>,
}

impl Roles {
    /// Fresh snapshots into `metrics` (a role that does not answer in time
    /// keeps its last values).
    pub fn refresh(&self, metrics: &ServerMetrics) {
        let t = self.trigger.as_ref().map(TriggerHandle::snapshot);
        if let Some(session) = &self.session {
            if let Some(Ok(s)) = session.snapshot().wait_timeout(status::SNAPSHOT_WAIT) {
                metrics.observe_session(&s);
            }
        }
        if let Some(Some(Ok(t))) = t.map(|r| r.wait_timeout(status::SNAPSHOT_WAIT)) {
            metrics.observe_trigger(&t);
        }
    }

    /// The operator's status (needs the session server).
    pub fn status(&self) -> Result<Status, String> {
        let session = self
            .session
            .as_ref()
            .ok_or("no session server runs in this process")?;
        status::gather(session, self.trigger.as_ref())
    }
}

/// `/metrics` of `metrics`, refreshed from `roles` at each scrape.
pub fn metrics_app(metrics: Arc<ServerMetrics>, roles: Roles) -> Arc<dyn HttpApp> {
    Arc::new(move |req: HttpRequest| {
        if req.method != "GET" || req.path != "/metrics" {
            return HttpResponse::text(404, "not found: try /metrics");
        }
        roles.refresh(&metrics);
        HttpResponse::new(200, CONTENT_TYPE, metrics.encode())
    })
}

/// Starts the metrics listener on `addr` and prints where it listens.
pub fn start_metrics(
    addr: SocketAddr,
    metrics: Arc<ServerMetrics>,
    roles: Roles,
) -> Result<HttpListener, CliError> {
    let listener = serve_blocking(addr, metrics_app(metrics, roles))
        .map_err(|e| super::bind_error("metrics", addr, e))?;
    println!("metrics: http://{}/metrics", listener.addr);
    tracing::info!(addr = %listener.addr, "metrics listening");
    Ok(listener)
}

/// What the status page asks of a running server.
struct ServerOperator {
    roles: Roles,
    dir: PathBuf,
}

impl Operator for ServerOperator {
    fn status(&self) -> Result<Status, String> {
        self.roles.status()
    }

    fn end(&self, id: SessionId) -> Result<(), String> {
        let session = self.roles.session.as_ref().ok_or("no session server")?;
        match session.end_session(id).wait_timeout(END_WAIT) {
            Some(Ok(())) => {
                tracing::info!(session = %crate::store::id_hex(&id), "operator ended the session from the status page (S1604)");
                Ok(())
            }
            Some(Err(e)) => Err(e.to_string()),
            None => Err("the session server did not answer".into()),
        }
    }

    fn log(&self) -> Result<Vec<LogRow>, String> {
        Store::open(&self.dir)
            .and_then(|s| ServerStore::log(&s))
            .map_err(|e| e.to_string())
    }

    fn refusals(&self) -> Result<Vec<crate::store::RefusalRow>, String> {
        Store::open(&self.dir)
            .and_then(|s| ServerStore::refusals(&s))
            .map_err(|e| e.to_string())
    }
}

/// Starts the status page on `addr` on `driver` (token read or created in
/// `dir`) and prints where it listens; never prints the token.
pub fn start_page<D: Driver + ?Sized>(
    driver: &D,
    addr: SocketAddr,
    dir: &Path,
    roles: Roles,
) -> Result<HttpListener, CliError> {
    let (token, created) = operator_token(dir).map_err(CliError::usage)?;
    let page = StatusPage::new(
        token,
        Arc::new(ServerOperator {
            roles,
            dir: dir.to_path_buf(),
        }),
    );
    let listener = driver
        .http(addr, Arc::new(page))
        .map_err(|e| super::bind_error("status page", addr, e))?;
    println!("status page: http://{}/", listener.addr);
    if created {
        println!(
            "created the operator token {}",
            dir.join(OPERATOR_TOKEN_FILE).display()
        );
    }
    tracing::info!(addr = %listener.addr, "status page listening");
    Ok(listener)
}

/// The answer to `tryst status` (JSON of [`Status`], or an error line).
pub fn status_answer(roles: &Roles) -> String {
    match roles.status() {
        Ok(status) => status.to_json().to_string(),
        Err(e) => format!("error: {e}"),
    }
}
