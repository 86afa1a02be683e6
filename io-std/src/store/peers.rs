//! The session servers' messages to each other (cross-server connection
//! requests, [`PeerMessage`]) over the shared PostgreSQL store's
//! `LISTEN`/`NOTIFY`: every server of the cluster already holds a
//! connection to it, and trusts it with every binding and record, so the
//! channel needs no other address, key or port. A notification reaches
//! the listeners as its transaction commits (milliseconds; no poll), is
//! bounded at 8000 bytes (a peer message is under 700, hex-encoded), and
//! is lost if no connection listens then: a lost message only makes its
//! request end in the uniform denial at its deny time.
//!
//! Both drivers use it: the runner opens it before the server accepts a
//! stream, hands [`PeerLink::start_sender`]'s channel to the role and
//! [`PeerLink::start_listener`] the role's commands.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};
use tryst_core::session_server::PeerMessage;

use super::pg::redact;
use super::StoreError;

/// The notification channel (per database, so per cluster).
pub const PEER_CHANNEL: &str = "tryst_peers";
/// How long the listener waits for a notification before it looks again
/// whether the server is still there.
const LISTEN_WAKE: Duration = Duration::from_secs(1);
/// The wait before a lost connection is opened again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// The two connections a server's peer messages use: one sends, one
/// listens (a blocking client cannot wait for notifications and send at
/// once).
pub struct PeerLink {
    url: String,
    /// Taken by [`PeerLink::start_sender`].
    sender: Option<Client>,
    listener: Client,
}

impl std::fmt::Debug for PeerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLink")
            .field("url", &redact(&self.url))
            .finish_non_exhaustive()
    }
}

/// Connects to `url` and listens on [`PEER_CHANNEL`].
fn listening(url: &str) -> Result<Client, StoreError> {
    let pg = |source| StoreError::Postgres {
        url: redact(url),
        source,
    };
    let mut client = Client::connect(url, NoTls).map_err(pg)?;
    client
        .batch_execute(&format!("LISTEN {PEER_CHANNEL}"))
        .map_err(pg)?;
    Ok(client)
}

/// The hex text of a message (a notification's payload is text).
pub fn to_payload(message: &PeerMessage) -> Option<String> {
    let bytes = message.encode()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The message of a payload; `None` for anything else.
pub fn from_payload(payload: &str) -> Option<PeerMessage> {
    let text = payload.as_bytes();
    if !text.len().is_multiple_of(2)
        || text.len() > 2 * tryst_core::session_server::MAX_PEER_MESSAGE_LEN
    {
        return None;
    }
    let bytes: Option<Vec<u8>> = text
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            // Lowercase only: one text per message.
            if s.bytes().any(|c| c.is_ascii_uppercase()) {
                return None;
            }
            u8::from_str_radix(s, 16).ok()
        })
        .collect();
    PeerMessage::decode(&bytes?).ok()
}

impl PeerLink {
    /// Opens both connections (the listener listening from now on).
    pub fn open(url: &str) -> Result<PeerLink, StoreError> {
        let sender = Client::connect(url, NoTls).map_err(|source| StoreError::Postgres {
            url: redact(url),
            source,
        })?;
        Ok(PeerLink {
            url: url.to_owned(),
            sender: Some(sender),
            listener: listening(url)?,
        })
    }

    /// Starts the sending thread; the returned channel's messages go to
    /// the cluster, in order, until it is dropped.
    pub fn start_sender(&mut self) -> std::io::Result<flume::Sender<PeerMessage>> {
        let (tx, rx) = flume::unbounded::<PeerMessage>();
        let url = self.url.clone();
        let mut client = match self.sender.take() {
            Some(client) => client,
            None => Client::connect(&url, NoTls).map_err(std::io::Error::other)?,
        };
        std::thread::Builder::new()
            .name("tryst-peers-out".into())
            .spawn(move || {
                while let Ok(message) = rx.recv() {
                    let Some(payload) = to_payload(&message) else {
                        continue;
                    };
                    let sent =
                        client.execute("SELECT pg_notify($1, $2)", &[&PEER_CHANNEL, &payload]);
                    if let Err(e) = sent {
                        tracing::warn!(error = %e, "a message for the other servers was not sent");
                        match Client::connect(&url, NoTls) {
                            Ok(fresh) => client = fresh,
                            Err(_) => std::thread::sleep(RECONNECT_AFTER),
                        }
                    }
                }
            })?;
        Ok(tx)
    }

    /// Starts the listening thread: each message from another server goes
    /// to `deliver`, until it returns `false` (the server is gone); so does
    /// each wake without one, to `deliver(None)`.
    pub fn start_listener<D>(self, mut deliver: D) -> std::io::Result<()>
    where
        D: FnMut(Option<PeerMessage>) -> bool + Send + 'static,
    {
        let PeerLink { url, listener, .. } = self;
        std::thread::Builder::new()
            .name("tryst-peers-in".into())
            .spawn(move || {
                let mut client = Some(listener);
                loop {
                    let Some(c) = client.as_mut() else {
                        std::thread::sleep(RECONNECT_AFTER);
                        client = listening(&url).ok();
                        if !deliver(None) {
                            return;
                        }
                        continue;
                    };
                    let mut lost = false;
                    let mut alive = true;
                    {
                        let mut notes = c.notifications();
                        let mut wakes = notes.timeout_iter(LISTEN_WAKE);
                        loop {
                            match wakes.next() {
                                Ok(Some(note)) => {
                                    let message = from_payload(note.payload());
                                    if message.is_none() {
                                        tracing::warn!("a notification that is no peer message was ignored");
                                    }
                                    if message.is_some() && !deliver(message) {
                                        return;
                                    }
                                }
                                Ok(None) => {
                                    alive = deliver(None);
                                    break;
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "the other servers' messages are not heard: connecting again");
                                    lost = true;
                                    break;
                                }
                            }
                        }
                    }
                    if lost {
                        client = None;
                    }
                    if !alive {
                        return;
                    }
                }
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tryst_core::session_server::PeerBody;
    use tryst_core::wire::{PublicKey, SessionId};

    #[test]
    fn a_peer_payload_is_lowercase_hex_of_the_message_and_nothing_else_decodes() {
        let m = PeerMessage {
            from: PublicKey([1; 32]),
            to: Some(PublicKey([2; 32])),
            body: PeerBody::EndTrigger {
                session_id: SessionId([3; 16]),
                name: "home".into(),
            },
        };
        let text = to_payload(&m).unwrap();
        assert!(text.starts_with("0105"));
        assert_eq!(from_payload(&text), Some(m));
        assert_eq!(from_payload(&text.to_uppercase()), None);
        assert_eq!(from_payload(&text[1..]), None);
        assert_eq!(from_payload("zz"), None);
        assert_eq!(from_payload(&"00".repeat(5000)), None);
    }
}
