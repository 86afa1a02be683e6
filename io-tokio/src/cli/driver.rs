//! The tokio driver as the shared CLI's [`Driver`]: each role is started
//! on one multi-threaded runtime that lives as long as this value (the
//! terminal on its own thread and runtime, as [`crate::driver::terminal`]
//! always runs it).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tryst_core::crypto::StaticKeypair;
use tryst_core::names::NameRegistry;
use tryst_core::session_server::{SessionConfig, SessionEvent};
use tryst_core::terminal::TerminalConfig;
use tryst_core::trigger_server::{TriggerConfig, TriggerEvent};
use tryst_core::wire::PublicKey;
use tryst_std::cli::driver::Driver;
use tryst_std::drive::Stopped;
use tryst_std::observe::http::{HttpApp, HttpListener};
use tryst_std::role::session_server::{Durable, SessionHandle};
use tryst_std::role::terminal::{Event, TerminalHandle, TerminalOptions};
use tryst_std::role::trigger_server::TriggerHandle;
use tryst_std::role::Reply;

use crate::driver::{session_server, terminal, trigger_server};

/// How long background tasks (stream writers, pollers) may hold the exit.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(200);

/// The roles on tokio: one runtime, shut down (briefly) when dropped.
#[derive(Debug)]
pub struct TokioDriver {
    runtime: Option<tokio::runtime::Runtime>,
}

impl TokioDriver {
    /// A driver with a fresh multi-threaded runtime.
    pub fn new() -> io::Result<TokioDriver> {
        Ok(TokioDriver {
            runtime: Some(tokio::runtime::Runtime::new()?),
        })
    }

    fn runtime(&self) -> io::Result<&tokio::runtime::Runtime> {
        self.runtime
            .as_ref()
            .ok_or_else(|| io::Error::other("the runtime stopped"))
    }
}

impl Drop for TokioDriver {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Background tasks (stream writers, pollers) must not hold the exit.
            runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
        }
    }
}

impl Driver for TokioDriver {
    /// The status page on this runtime, with axum ([`super::http`]).
    fn http(&self, addr: SocketAddr, app: Arc<dyn HttpApp>) -> io::Result<HttpListener> {
        super::http::serve(self.runtime()?, addr, app)
    }

    fn terminal(
        &self,
        config: TerminalConfig,
        keypair: StaticKeypair,
        session_server: SocketAddr,
        udp_addr: SocketAddr,
        permissions: &[&str],
        options: TerminalOptions,
    ) -> io::Result<(TerminalHandle, flume::Receiver<Event>)> {
        self.runtime()?.block_on(terminal::spawn_with(
            config,
            keypair,
            session_server,
            udp_addr,
            permissions,
            options,
        ))
    }

    fn session_server(
        &self,
        config: SessionConfig,
        keypair: StaticKeypair,
        registry: NameRegistry,
        trigger_key: PublicKey,
        trigger_link: SocketAddr,
        control_addr: SocketAddr,
        setup: Durable,
    ) -> io::Result<(SessionHandle, flume::Receiver<SessionEvent>, Reply<Stopped>)> {
        let runtime = self.runtime()?;
        let (handle, events, stopped) = runtime.block_on(session_server::spawn_durable(
            config,
            keypair,
            registry,
            trigger_key,
            trigger_link,
            control_addr,
            setup,
        ))?;
        let (answer, reply) = Reply::channel();
        runtime.spawn(async move {
            if let Ok(why) = stopped.await {
                let _ = answer.send(Ok(why));
            }
        });
        Ok((handle, events, reply))
    }

    fn trigger_server(
        &self,
        config: TriggerConfig,
        keypair: StaticKeypair,
        session_servers: &[PublicKey],
        udp_addr: SocketAddr,
        link_addr: SocketAddr,
    ) -> io::Result<(TriggerHandle, flume::Receiver<TriggerEvent>)> {
        self.runtime()?.block_on(trigger_server::spawn(
            config,
            keypair,
            session_servers,
            udp_addr,
            link_addr,
        ))
    }

    fn relay(
        &self,
        config: tryst_core::relay::server::RelayConfig,
        clock: tryst_std::drive::DriverClock,
        udp_addr: SocketAddr,
    ) -> io::Result<(
        tryst_std::role::relay::RelayHandle,
        flume::Receiver<tryst_core::relay::server::RelayEvent>,
    )> {
        self.runtime()?
            .block_on(crate::driver::relay::spawn(config, clock, udp_addr))
    }
}
