//! What a device vendor writes to put the blocking std terminal inside a
//! program of its own (no async runtime): register as a name, allow one
//! peer, receive one file with progress, exit once it is stored, its
//! SHA-256 matched and the sender was told (the session's end).
//!
//! ```sh
//! cargo run -p tryst-std --example device -- \
//!     NAME SERVER_ADDR TRIGGER_ADDR SERVER_KEY STATE_DIR ALLOWED_PEER RECV_DIR
//! ```
//!
//! The key is made (mode 0600) in STATE_DIR on the first run and kept;
//! SERVER_KEY is the server's public key in hex, or its `server.pub` file.

use std::error::Error;
use std::path::PathBuf;
use std::time::Duration;

use tryst_std::cli::terminal::StateDir;
use tryst_std::core::terminal::{TerminalConfig, TerminalEvent};
use tryst_std::driver::terminal::spawn_with;
use tryst_std::keyfile::read_public_key;
use tryst_std::role::terminal::{Event, TerminalOptions};
use tryst_std::transfer::check_recv_dir;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name, server, trigger, server_key, state, allow, recv_dir] = args.as_slice() else {
        return Err("usage: device NAME SERVER TRIGGER SERVER_KEY STATE_DIR ALLOW RECV_DIR".into());
    };
    let keypair = StateDir::open(state.as_ref())?.keypair()?;
    check_recv_dir(recv_dir.as_ref())?; // created if missing, writable, ours
    let config = TerminalConfig::new(name, trigger.parse()?, read_public_key(server_key)?)?;
    let options = TerminalOptions {
        recv_dir: Some(PathBuf::from(recv_dir)),
        ..TerminalOptions::default()
    };
    let (server, any_port) = (server.parse()?, "0.0.0.0:0".parse()?);
    let (terminal, events) = spawn_with(config, keypair, server, any_port, &[allow], options)?;
    let mut stored = None;
    for event in events.iter() {
        match event {
            Event::Terminal(TerminalEvent::Online { observed }) => {
                println!("online as {name}, seen at {observed}; {allow} may send");
            }
            Event::Receiving {
                name, done, size, ..
            } => {
                println!("receiving {name}: {done} of {size} bytes");
            }
            Event::Received {
                session_id,
                outcome: Ok(file),
            } => {
                println!("stored {} ({} bytes)", file.path.display(), file.size);
                stored = Some(session_id); // the sender is told, then the session ends
            }
            Event::Terminal(TerminalEvent::SessionEnded { session_id, .. })
                if stored == Some(session_id) =>
            {
                terminal.shutdown(Duration::from_secs(2)).wait()?;
                return Ok(());
            }
            Event::Received {
                outcome: Err(why), ..
            } => println!("not stored: {why}"),
            _ => {}
        }
    }
    Err("the terminal stopped".into())
}
