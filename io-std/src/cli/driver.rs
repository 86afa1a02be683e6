//! What a binary's driver gives the shared CLI: the three roles, started on
//! that driver and returned as the shared handles ([`crate::role`]). The
//! long-running subcommands (`server`, `session-server`, `trigger-server`,
//! `terminal`, `connect`) are written once, blocking, over this trait;
//! `tryst` implements it on tokio, `tryst-std` on the blocking driver.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tryst_core::crypto::StaticKeypair;
use tryst_core::names::NameRegistry;
use tryst_core::session_server::{SessionConfig, SessionEvent};
use tryst_core::terminal::TerminalConfig;
use tryst_core::trigger_server::{TriggerConfig, TriggerEvent};
use tryst_core::wire::PublicKey;

use crate::drive::Stopped;
use crate::observe::http::{HttpApp, HttpListener};
use crate::role::session_server::{Durable, SessionHandle};
use crate::role::terminal::{Event, TerminalHandle, TerminalOptions};
use crate::role::trigger_server::TriggerHandle;
use crate::role::Reply;

/// Starts each role on a driver. Every method binds its sockets before it
/// returns (so a bind error is the caller's to report, and the handle
/// carries the bound addresses) and leaves the role running until its
/// handle (every clone of it) is dropped or told to stop.
pub trait Driver {
    /// A terminal (both seed roles) on UDP `udp_addr`, registering with
    /// the session server at `session_server` at once; all its events.
    fn terminal(
        &self,
        config: TerminalConfig,
        keypair: StaticKeypair,
        session_server: SocketAddr,
        udp_addr: SocketAddr,
        permissions: &[&str],
        options: TerminalOptions,
    ) -> io::Result<(TerminalHandle, flume::Receiver<Event>)>;

    /// A session server listening for terminals on `control_addr`, linked
    /// to the trigger server at `trigger_link` (whose key is
    /// `trigger_key`), started from `setup` (restored sessions, its
    /// journal, its clock); its events, and why its loop stopped.
    #[allow(clippy::too_many_arguments)]
    fn session_server(
        &self,
        config: SessionConfig,
        keypair: StaticKeypair,
        registry: NameRegistry,
        trigger_key: PublicKey,
        trigger_link: SocketAddr,
        control_addr: SocketAddr,
        setup: Durable,
    ) -> io::Result<(SessionHandle, flume::Receiver<SessionEvent>, Reply<Stopped>)>;

    /// A trigger server on UDP `udp_addr` that accepts links on
    /// `link_addr` from the session servers whose keys are
    /// `session_servers`; its events.
    fn trigger_server(
        &self,
        config: TriggerConfig,
        keypair: StaticKeypair,
        session_servers: &[PublicKey],
        udp_addr: SocketAddr,
        link_addr: SocketAddr,
    ) -> io::Result<(TriggerHandle, flume::Receiver<TriggerEvent>)>;

    /// A relay on UDP `udp_addr` with `config`; `clock` is the clock its
    /// `config.unix_at_zero` is measured against. Its events.
    fn relay(
        &self,
        config: tryst_core::relay::server::RelayConfig,
        clock: crate::drive::DriverClock,
        udp_addr: SocketAddr,
    ) -> io::Result<(
        crate::role::relay::RelayHandle,
        flume::Receiver<tryst_core::relay::server::RelayEvent>,
    )>;

    /// Serves the operator's HTTP `app` (the status page) on `addr` until
    /// the listener is dropped. The default is the blocking listener of
    /// [`crate::observe::http`] on a thread; an async driver serves the
    /// same app on its runtime.
    fn http(&self, addr: SocketAddr, app: Arc<dyn HttpApp>) -> io::Result<HttpListener> {
        crate::observe::http::serve_blocking(addr, app)
    }
}

/// The blocking driver ([`crate::driver`]) as the shared CLI's
/// [`Driver`]: each role on a thread of its own, no async runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdDriver;

impl Driver for StdDriver {
    fn terminal(
        &self,
        config: TerminalConfig,
        keypair: StaticKeypair,
        session_server: SocketAddr,
        udp_addr: SocketAddr,
        permissions: &[&str],
        options: TerminalOptions,
    ) -> io::Result<(TerminalHandle, flume::Receiver<Event>)> {
        crate::driver::terminal::spawn_with(
            config,
            keypair,
            session_server,
            udp_addr,
            permissions,
            options,
        )
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
        let (handle, events, thread) = crate::driver::session_server::spawn_durable(
            config,
            keypair,
            registry,
            trigger_key,
            trigger_link,
            control_addr,
            setup,
        )?;
        let (answer, stopped) = Reply::channel();
        // The loop's thread says why it stopped when it ends; a loop that
        // panicked leaves the answer unsent, which reads as stopped too.
        std::thread::Builder::new()
            .name("tryst-session-watch".into())
            .spawn(move || {
                if let Ok(why) = thread.join() {
                    let _ = answer.send(Ok(why));
                }
            })?;
        Ok((handle, events, stopped))
    }

    fn trigger_server(
        &self,
        config: TriggerConfig,
        keypair: StaticKeypair,
        session_servers: &[PublicKey],
        udp_addr: SocketAddr,
        link_addr: SocketAddr,
    ) -> io::Result<(TriggerHandle, flume::Receiver<TriggerEvent>)> {
        crate::driver::trigger_server::spawn(config, keypair, session_servers, udp_addr, link_addr)
    }

    fn relay(
        &self,
        config: tryst_core::relay::server::RelayConfig,
        clock: crate::drive::DriverClock,
        udp_addr: SocketAddr,
    ) -> io::Result<(
        crate::role::relay::RelayHandle,
        flume::Receiver<tryst_core::relay::server::RelayEvent>,
    )> {
        crate::driver::relay::spawn(config, clock, udp_addr)
    }
}
